"""Fine-tuning start: parameters from another run's checkpoint into a fresh state.

`checkpoint.init_from` names a workdir (its latest checkpoint), a `checkpoints/` folder or
one step's folder. Parameters are matched by path; missing, unexpected and shape-mismatched
ones are listed. `checkpoint.init_strict=True` refuses any mismatch; otherwise the
matching parameters are loaded and the rest keep their fresh initialisation.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

log = logging.getLogger("strata")


class InitFromError(ValueError):
    """The checkpoint to start from cannot be found or does not fit the model."""


def resolve_state_dir(path: str) -> str:
    """The `.../<step>/state` folder that `path` points to."""
    path = os.path.abspath(os.path.expanduser(path))
    candidates = [path, os.path.join(path, "checkpoints")]
    for c in candidates:
        if os.path.isdir(os.path.join(c, "state")):
            return os.path.join(c, "state")
        if os.path.isdir(c):
            steps = sorted((int(d) for d in os.listdir(c) if d.isdigit()), reverse=True)
            if steps:
                return os.path.join(c, str(steps[0]), "state")
    raise InitFromError(f"checkpoint.init_from={path!r} holds no checkpoint; give a workdir, "
                        "its checkpoints/ folder or one step folder.")


def load_params(path: str) -> dict:
    """The saved parameters as a nested dict of numpy arrays."""
    from train.checkpoints import read_state
    return read_state(resolve_state_dir(path))["params"]


def merge_params(fresh: Any, loaded: dict, strict: bool) -> tuple[Any, dict[str, list[str]]]:
    """`fresh` with every same-path, same-shape leaf of `loaded` copied in; and the report."""
    flat_fresh = traverse_util.flatten_dict(jax.device_get(fresh), sep="/")
    flat_loaded = traverse_util.flatten_dict(loaded, sep="/")
    report = {
        "missing": sorted(set(flat_fresh) - set(flat_loaded)),
        "unexpected": sorted(set(flat_loaded) - set(flat_fresh)),
        "shape_mismatch": sorted(
            f"{k} {tuple(flat_loaded[k].shape)} -> {tuple(flat_fresh[k].shape)}"
            for k in set(flat_fresh) & set(flat_loaded)
            if tuple(flat_fresh[k].shape) != tuple(flat_loaded[k].shape)),
    }
    problems = {k: v for k, v in report.items() if v}
    if strict and problems:
        shown = "; ".join(f"{k}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for k, v in problems.items())
        raise InitFromError(f"checkpoint.init_from does not match the model ({shown}); "
                            "set --config.checkpoint.init_strict=False to load what matches.")
    merged = dict(flat_fresh)
    mismatched = {s.split(" ")[0] for s in report["shape_mismatch"]}
    for k, v in flat_loaded.items():
        if k in flat_fresh and k not in mismatched:
            merged[k] = v.astype(flat_fresh[k].dtype)
    return traverse_util.unflatten_dict(merged, sep="/"), report


def params_from(path: str, fresh_params: Any, shardings: Any, strict: bool) -> tuple[Any, dict]:
    """Parameters for a new run, placed with `shardings` (those of the fresh params)."""
    merged, report = merge_params(fresh_params, load_params(path), strict)
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), merged, shardings)
    return placed, report
