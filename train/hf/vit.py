"""ViT (`ViTForImageClassification`) <-> Strata `models.vit.ViT` (pool "cls", learned
position embedding).

Hugging Face `nn.Linear` weights are (out, in): Strata kernels are their transposes,
reshaped to (E, H, D) for queries, keys and values and (H, D, E) for the output
projection; the patch convolution goes from (E, C, p, p) to (p, p, C, E). Hugging Face
ViT takes NCHW pixel values, Strata NHWC images: the same numbers, transposed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from errors import CheckpointError
from train.hf import take

GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}
Source = tuple[str, tuple[int, ...], np.ndarray]  # (hf name, hf shape, array in Strata layout)


def _check(hf_config: dict) -> None:
    act = hf_config.get("hidden_act", "gelu")
    if act not in GELU:
        raise CheckpointError(f"ViT hidden_act {act!r} has no Strata match; supported: {', '.join(GELU)}.")
    if hf_config.get("qkv_bias", True) is False:
        raise CheckpointError("ViT config sets qkv_bias=false; Strata's ViT always has query/key/value biases.")


def to_strata(tensors: dict[str, np.ndarray], hf_config: dict) -> dict[str, Source]:
    """Flat Strata parameters ("block_0/query/kernel" -> source) of a ViT checkpoint."""
    _check(hf_config)
    width = hf_config.get("hidden_size", 768)
    heads = hf_config.get("num_attention_heads", 12)
    head_dim = width // heads
    out: dict[str, Source] = {}

    def put(path: str, name: str, fn=lambda a: a) -> None:
        a = np.asarray(take(tensors, name), np.float32)
        b = fn(a)
        out[path] = (name, tuple(a.shape), b)

    def linear_t(*shape: int):  # (out, in) -> in-major kernel, reshaped when it fits
        return lambda a: a.T.reshape(shape) if a.size == np.prod(shape) else a.T

    def reshaped(*shape: int):
        return lambda a: a.reshape(shape) if a.size == np.prod(shape) else a

    put("patch_embed/kernel", "vit.embeddings.patch_embeddings.projection.weight",
        lambda a: a.transpose(2, 3, 1, 0))  # (E, C, p, p) -> (p, p, C, E)
    put("patch_embed/bias", "vit.embeddings.patch_embeddings.projection.bias")
    put("cls", "vit.embeddings.cls_token")
    put("pos_embed", "vit.embeddings.position_embeddings")
    for i in range(hf_config.get("num_hidden_layers", 12)):
        p, h = f"block_{i}", f"vit.encoder.layer.{i}"
        for ln, hf_ln in (("ln_attn", "layernorm_before"), ("ln_mlp", "layernorm_after")):
            put(f"{p}/{ln}/scale", f"{h}.{hf_ln}.weight")
            put(f"{p}/{ln}/bias", f"{h}.{hf_ln}.bias")
        for name in ("query", "key", "value"):
            put(f"{p}/{name}/kernel", f"{h}.attention.attention.{name}.weight", linear_t(width, heads, head_dim))
            put(f"{p}/{name}/bias", f"{h}.attention.attention.{name}.bias", reshaped(heads, head_dim))
        put(f"{p}/out/kernel", f"{h}.attention.output.dense.weight", linear_t(heads, head_dim, width))
        put(f"{p}/out/bias", f"{h}.attention.output.dense.bias")
        put(f"{p}/mlp_in/kernel", f"{h}.intermediate.dense.weight", lambda a: a.T)
        put(f"{p}/mlp_in/bias", f"{h}.intermediate.dense.bias")
        put(f"{p}/mlp_out/kernel", f"{h}.output.dense.weight", lambda a: a.T)
        put(f"{p}/mlp_out/bias", f"{h}.output.dense.bias")
    put("ln_final/scale", "vit.layernorm.weight")
    put("ln_final/bias", "vit.layernorm.bias")
    put("head/kernel", "classifier.weight", lambda a: a.T)
    put("head/bias", "classifier.bias")
    return out


def from_strata(flat: dict[str, np.ndarray], fields: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """(ViT tensors, config.json dict) of flat Strata ViT parameters and its fields."""
    if "cls" not in flat or "pos_embed" not in flat:
        raise CheckpointError("Hugging Face ViT needs pool='cls' and posemb='learn'; this run "
                              "uses another pooling or position embedding and cannot be exported.")
    patch, _, channels, width = flat["patch_embed/kernel"].shape
    grid = int(round((flat["pos_embed"].shape[1] - 1) ** 0.5))
    depth = sum(1 for k in flat if k.endswith("/query/kernel"))
    heads = flat["block_0/query/kernel"].shape[1]
    mlp = flat["block_0/mlp_in/kernel"].shape[1]
    classes = flat["head/kernel"].shape[1]
    t: dict[str, np.ndarray] = {
        "vit.embeddings.patch_embeddings.projection.weight": flat["patch_embed/kernel"].transpose(3, 2, 0, 1),
        "vit.embeddings.patch_embeddings.projection.bias": flat["patch_embed/bias"],
        "vit.embeddings.cls_token": flat["cls"],
        "vit.embeddings.position_embeddings": flat["pos_embed"],
    }
    for i in range(depth):
        p, h = f"block_{i}", f"vit.encoder.layer.{i}"
        for ln, hf_ln in (("ln_attn", "layernorm_before"), ("ln_mlp", "layernorm_after")):
            t[f"{h}.{hf_ln}.weight"] = flat[f"{p}/{ln}/scale"]
            t[f"{h}.{hf_ln}.bias"] = flat[f"{p}/{ln}/bias"]
        for name in ("query", "key", "value"):
            t[f"{h}.attention.attention.{name}.weight"] = flat[f"{p}/{name}/kernel"].reshape(width, width).T
            t[f"{h}.attention.attention.{name}.bias"] = flat[f"{p}/{name}/bias"].reshape(width)
        t[f"{h}.attention.output.dense.weight"] = flat[f"{p}/out/kernel"].reshape(width, width).T
        t[f"{h}.attention.output.dense.bias"] = flat[f"{p}/out/bias"]
        t[f"{h}.intermediate.dense.weight"] = flat[f"{p}/mlp_in/kernel"].T
        t[f"{h}.intermediate.dense.bias"] = flat[f"{p}/mlp_in/bias"]
        t[f"{h}.output.dense.weight"] = flat[f"{p}/mlp_out/kernel"].T
        t[f"{h}.output.dense.bias"] = flat[f"{p}/mlp_out/bias"]
    t["vit.layernorm.weight"] = flat["ln_final/scale"]
    t["vit.layernorm.bias"] = flat["ln_final/bias"]
    t["classifier.weight"] = flat["head/kernel"].T
    t["classifier.bias"] = flat["head/bias"]
    config = {
        "architectures": ["ViTForImageClassification"], "model_type": "vit",
        "hidden_size": int(width), "num_hidden_layers": depth, "num_attention_heads": int(heads),
        "intermediate_size": int(mlp), "image_size": int(grid * patch), "patch_size": int(patch),
        "num_channels": int(channels), "qkv_bias": True,
        "hidden_act": "gelu_pytorch_tanh" if fields.get("gelu_approximate", True) else "gelu",
        "layer_norm_eps": float(fields.get("layer_norm_epsilon", 1e-6)),
        "hidden_dropout_prob": float(fields.get("dropout", 0.0)), "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): f"LABEL_{i}" for i in range(classes)},
        "label2id": {f"LABEL_{i}": i for i in range(classes)},
        "torch_dtype": "float32",
    }
    return t, config
