"""Evaluators by type, big_vision style: `config.evals.<name> = dict(type=..., ...)`.

Each run may have several evaluators, each with its own split, preprocessing, cadence,
batch size and metric prefix. An evaluator is a small dataclass in this folder, found by
`type` through `EVALUATORS`; its fields come from its `evals.<name>` entry.

    c.evals.default = evaluator("metrics")                       # eval/loss, eval/accuracy, ...
    c.evals.train = evaluator("metrics", split="train[:10%]")    # eval/train/loss, ...

The one fallback rule for the common fields lives in `resolve` (and is described next to
`evals` in configs/common.py).
"""
from __future__ import annotations

import dataclasses
import importlib

import ml_collections

from errors import ConfigError, UnknownNameError, lookup
from train.evaluators.base import EvalContext, Evaluator  # noqa: F401  (the interface)

# type -> "module:Class", imported only when a config uses it.
EVALUATORS: dict[str, str] = {
    "metrics": "train.evaluators.metrics:Metrics",
    "unigram_baseline": "train.evaluators.unigram:UnigramBaseline",
    "sample_quality": "train.evaluators.sample_quality:SampleQuality",
    "fid": "train.evaluators.fid:FID",
    "translation": "train.evaluators.translation:TranslationQuality",
    "adversarial": "train.evaluators.adversarial:Adversarial",
}
COMMON_FIELDS = ("type", "split", "preprocess", "every", "batch_size", "max_batches", "prefix")
DEFAULT_NAME = "default"  # its metrics keep the plain `eval/<metric>` keys


def resolve(config: ml_collections.ConfigDict, name: str) -> dict:
    """The fields of evaluator `name` with the defaults filled in: split "" ->
    data.eval_split, preprocess "" -> data.eval_preprocess, every 0 -> train.eval_every,
    batch_size 0 -> train.eval_batch_size -> train.batch_size, max_batches 0 ->
    train.eval_max_batches (0 = all), prefix "" -> "eval/" (default) or "eval/<name>/"."""
    spec = config.evals[name]
    missing = [k for k in COMMON_FIELDS if k not in spec]
    if missing:
        raise ConfigError(f"config.evals.{name} lacks {', '.join(missing)}; build it with "
                          "configs.common.evaluator(type, ...).")
    fields = dict(spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else spec)
    fields["split"] = fields["split"] or config.data.eval_split
    fields["preprocess"] = fields["preprocess"] or config.data.eval_preprocess
    fields["every"] = fields["every"] or config.train.eval_every
    fields["batch_size"] = (fields["batch_size"] or config.train.eval_batch_size
                            or config.train.batch_size)
    fields["max_batches"] = fields["max_batches"] or config.train.eval_max_batches
    fields["prefix"] = fields["prefix"] or ("eval/" if name == DEFAULT_NAME else f"eval/{name}/")
    for key in ("every", "batch_size", "max_batches"):
        if fields[key] < 0:
            raise ConfigError(f"config.evals.{name}.{key} must not be negative, got {fields[key]}.")
    if not fields["prefix"].startswith("eval/"):
        raise ConfigError(f"config.evals.{name}.prefix must start with 'eval/', got {fields['prefix']!r}.")
    return fields


def get_class(type_name: str) -> type[Evaluator]:
    """The evaluator class registered under `type_name`."""
    module_name, class_name = lookup(EVALUATORS, "evaluator type", type_name).split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_evaluators(config: ml_collections.ConfigDict) -> list[Evaluator]:
    """One evaluator per `config.evals` entry whose split resolves to a name (an empty
    split, e.g. no `data.eval_split`, turns it off); unknown types and fields are one line."""
    out = []
    for name in config.evals:
        fields = resolve(config, name)
        cls = get_class(fields.pop("type"))
        valid = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(fields) - valid)
        if unknown:
            raise UnknownNameError(f"evaluator {name!r} ({cls.__name__}) has no field(s) "
                                   f"{', '.join(unknown)}. Valid: {', '.join(sorted(valid))}.")
        if fields["split"]:
            out.append(cls(name=name, **fields))
    return out
