"""Tasks by name: each gives loss, metrics, evaluation and (where it applies) sampling."""
from __future__ import annotations

import dataclasses
import importlib

from errors import UnknownNameError, lookup
from train.tasks.base import Task, TaskContext  # noqa: F401  (the interface)

TASKS: dict[str, str] = {
    "classification": "train.tasks.classification:Classification",
    "language_model": "train.tasks.language_model:LanguageModel",
    "diffusion": "train.tasks.diffusion:Diffusion",
    "translation": "train.tasks.translation:Translation",
}


def build_task(name: str, **fields) -> Task:
    """`Task(**config.task)` with the name taken out; unknown names and fields are reported."""
    module_name, class_name = lookup(TASKS, "task", name).split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise UnknownNameError(f"task {name!r} has no field(s) {', '.join(unknown)}. "
                               f"Valid: {', '.join(sorted(valid))}.")
    return cls(**fields)
