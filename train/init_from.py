"""Fine-tuning start: parameters from another run's checkpoint into a fresh state.

`checkpoint.init_from` names a workdir (its latest checkpoint), a `checkpoints/` folder or
one step's folder, or `hf:FOLDER`: a Hugging Face `save_pretrained` folder (config.json +
safetensors), converted by `train/hf/`. Parameters are matched by path; missing, unexpected and shape-mismatched
ones are listed. `checkpoint.init_strict=True` refuses any mismatch; otherwise the
matching parameters are loaded and the rest keep their fresh initialisation.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from errors import CheckpointError
from models.layers import STACK, stack_layers, unstack_layers


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
    raise CheckpointError(f"checkpoint.init_from={path!r} holds no checkpoint; give a workdir, "
                        "its checkpoints/ folder or one step folder.")


HF_PREFIX = "hf:"


def load_params(path: str) -> dict:
    """The saved parameters as a nested dict of numpy arrays, checked against the checksums
    saved with them (when the checkpoint has them). `hf:FOLDER`: a Hugging Face folder's
    weights in Strata's layout (a `train.hf.HFParams` that names each leaf's source)."""
    if path.startswith(HF_PREFIX):
        from train import hf
        return hf.load_params(path[len(HF_PREFIX):])
    from train.checkpoints import read_state, verify_digest
    state_dir = resolve_state_dir(path)
    params = read_state(state_dir)["params"]
    host = os.path.join(os.path.dirname(state_dir), "host", "metadata")
    if os.path.exists(host):
        with open(host) as f:
            digest = json.load(f).get("digest")
        saved = {k: v for k, v in (digest or {}).items() if k.startswith("params/")}
        verify_digest({"params": params}, saved, f"checkpoint.init_from={path!r}")
    return params


def match_report(target: Any, loaded: dict) -> dict[str, list[str]]:
    """Missing, unexpected and shape-mismatched parameter paths of `loaded` against
    `target` (arrays or ShapeDtypeStructs: no values needed)."""
    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_loaded = traverse_util.flatten_dict(loaded, sep="/")
    sources = getattr(loaded, "sources", None)  # hf: path -> (tensor name, its shape)
    differing = [k for k in flat_loaded if k in flat_target
                 and tuple(flat_target[k].shape) != tuple(flat_loaded[k].shape)]
    if sources:  # the Hugging Face file's order and names: the first differing tensor first
        mismatch = [f"{sources[k][0]} {sources[k][1]} (as {k} {tuple(flat_loaded[k].shape)}) "
                    f"-> the model's {tuple(flat_target[k].shape)}" for k in differing]
    else:
        mismatch = sorted(f"{k} {tuple(flat_loaded[k].shape)} -> {tuple(flat_target[k].shape)}"
                          for k in differing)
    return {
        "missing": sorted(set(flat_target) - set(flat_loaded)),
        "unexpected": sorted(set(flat_loaded) - set(flat_target)),
        "shape_mismatch": mismatch,
    }


def check_match(report: dict[str, list[str]], strict: bool) -> None:
    """With `strict`, any missing, unexpected or mismatched parameter is an error."""
    problems = {k: v for k, v in report.items() if v}
    if strict and problems:
        shown = "; ".join(f"{k}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for k, v in problems.items())
        raise CheckpointError(f"checkpoint.init_from does not match the model ({shown}); "
                            "set --config.checkpoint.init_strict=False to load what matches.")


def in_layout_of(target: Any, loaded: dict) -> dict:
    """`loaded` with its layer parameters stacked or unstacked to match `target`'s layout
    (`model.scan_layers` keeps one "blocks" subtree; otherwise "block_0", "block_1", ...),
    so a run can start from a checkpoint or Hugging Face folder of the other layout."""
    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_loaded = traverse_util.flatten_dict(loaded, sep="/")
    scanned = lambda flat: any(k.startswith(STACK) for k in flat)  # noqa: E731
    if scanned(flat_target) == scanned(flat_loaded):
        return loaded
    convert = stack_layers if scanned(flat_target) else unstack_layers
    return traverse_util.unflatten_dict(convert(flat_loaded), sep="/")


def merge_params(fresh: Any, loaded: dict, strict: bool) -> tuple[Any, dict[str, list[str]]]:
    """`fresh` with every same-path, same-shape leaf of `loaded` copied in; and the report."""
    loaded = in_layout_of(fresh, loaded)
    report = match_report(fresh, loaded)
    check_match(report, strict)
    flat_fresh = traverse_util.flatten_dict(jax.device_get(fresh), sep="/")
    flat_loaded = traverse_util.flatten_dict(loaded, sep="/")
    merged = dict(flat_fresh)
    mismatched = {s.split(" ")[0] for s in report["shape_mismatch"]}
    for k, v in flat_loaded.items():
        if k in flat_fresh and k not in mismatched:
            merged[k] = np.asarray(v).astype(flat_fresh[k].dtype)
    return traverse_util.unflatten_dict(merged, sep="/"), report


def params_from(path: str, fresh_params: Any, shardings: Any, strict: bool,
                loaded: dict | None = None) -> tuple[Any, dict]:
    """Parameters for a new run, placed with `shardings` (those of the fresh params)."""
    merged, report = merge_params(fresh_params, load_params(path) if loaded is None else loaded, strict)
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), merged, shardings)
    return placed, report
