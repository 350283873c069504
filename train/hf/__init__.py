"""Hugging Face checkpoints in and out: the safetensors + config.json folder that
`transformers`' `save_pretrained` writes, converted with numpy only (no PyTorch).

    params = load_params("gpt2-folder")       # Strata parameter tree (numpy), names remembered
    write_folder("out", params, "gpt", fields)  # a folder `from_pretrained` loads

A family is found by name through two tables: the Hugging Face `model_type` of a folder
being read (CONVERTERS), the Strata model name of a run being written (EXPORTERS). Each
module names `to_strata(tensors, hf_config)` and `from_strata(params, fields)`; the
Strata sizes for a folder are read by the config files (configs/gpt2_finetune.py,
configs/vit_finetune.py), which may import only configs/common.
"""
from __future__ import annotations

import importlib
import json
import os
from types import ModuleType
from typing import Any

import numpy as np
from flax import traverse_util

from errors import CheckpointError, lookup
from models.layers import unstack_layers

# Hugging Face `model_type` -> converter module (reading a folder).
CONVERTERS: dict[str, str] = {
    "gpt2": "train.hf.gpt2",
    "vit": "train.hf.vit",
}
# Strata model name -> converter module (writing a folder).
EXPORTERS: dict[str, str] = {
    "gpt": "train.hf.gpt2",
    "vit": "train.hf.vit",
}
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


class HFParams(dict):
    """A nested Strata parameter dict that remembers, per flattened path ("a/b/kernel"),
    the Hugging Face tensor it came from and that tensor's shape (for mismatch messages)."""
    sources: dict[str, tuple[str, tuple[int, ...]]]


def read_config(path: str) -> dict:
    """The folder's config.json as a dict; a missing folder or file is a CheckpointError."""
    file = os.path.join(os.path.expanduser(path), "config.json")
    if not os.path.isfile(file):
        raise CheckpointError(f"{path!r} has no config.json; give the folder that "
                              "save_pretrained wrote (config.json + model.safetensors).")
    with open(file) as f:
        return json.load(f)


def converter(hf_config: dict) -> ModuleType:
    """The converter module for a Hugging Face config's `model_type`."""
    return importlib.import_module(lookup(CONVERTERS, "Hugging Face model_type",
                                          str(hf_config.get("model_type"))))


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors file(s) (sharded ones via the index)."""
    from safetensors.numpy import load_file
    path = os.path.expanduser(path)
    index = os.path.join(path, INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, WEIGHTS)):
        files = [WEIGHTS]
    else:
        raise CheckpointError(f"{path!r} has no {WEIGHTS} (nor {INDEX}); only safetensors "
                              "weights are read (save_pretrained writes them by default).")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        tensors.update(load_file(os.path.join(path, name)))
    return tensors


def load_params(path: str) -> HFParams:
    """The folder's weights as a Strata parameter tree of float32 numpy arrays, with
    `.sources` naming the Hugging Face tensor behind each leaf."""
    hf_config = read_config(path)
    flat = converter(hf_config).to_strata(read_tensors(path), hf_config)  # path -> (hf name, hf shape, array)
    out = HFParams(traverse_util.unflatten_dict(
        {k: np.asarray(a, np.float32) for k, (_, _, a) in flat.items()}, sep="/"))
    out.sources = {k: (name, shape) for k, (name, shape, _) in flat.items()}
    return out


def take(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """tensors[name] (with or without a "transformer."-style prefix already stripped);
    a missing one is a CheckpointError naming it."""
    if name not in tensors:
        raise CheckpointError(f"the Hugging Face checkpoint has no tensor {name!r}; "
                              "is it the architecture its config.json names?")
    return tensors[name]


def write_folder(out: str, params: Any, model_name: str, fields: dict[str, Any]) -> list[str]:
    """Writes config.json + model.safetensors for Strata `params` of model `model_name`
    with config fields `fields` into `out`; returns the files written."""
    from safetensors.numpy import save_file
    module = importlib.import_module(lookup(EXPORTERS, "exportable model", model_name))
    flat = traverse_util.flatten_dict(params, sep="/")
    flat = unstack_layers({k: np.asarray(v, np.float32) for k, v in flat.items()})  # scan_layers runs
    tensors, hf_config = module.from_strata(flat, fields)
    os.makedirs(out, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(out, WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    return [os.path.join(out, WEIGHTS), os.path.join(out, "config.json")]
