"""GPT-2 (`GPT2LMHeadModel`) <-> Strata `models.gpt.GPT` (learned positions).

Hugging Face GPT-2 stores its projections as `Conv1D` weights of shape (in, out), so the
fused query/key/value projection `c_attn.weight` (E, 3E) is Strata's `qkv` kernel
(E, 3, H, D) after a reshape, and no matrix needs a transpose. Tensors may carry a
"transformer." prefix (save_pretrained of GPT2LMHeadModel) or none (the original
OpenAI-converted files); the causal-mask buffers (`attn.bias`, `attn.masked_bias`) of
older files are ignored. The head is tied to the token embedding unless the config
says `tie_word_embeddings: false`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from errors import CheckpointError
from train.hf import take

GELU = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}
Source = tuple[str, tuple[int, ...], np.ndarray]  # (hf name, hf shape, array in Strata layout)


def _check(hf_config: dict) -> None:
    act = hf_config.get("activation_function", "gelu_new")
    if act not in GELU:
        raise CheckpointError(f"GPT-2 activation_function {act!r} has no Strata match; "
                              f"supported: {', '.join(GELU)}.")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf_config.get(key):
            raise CheckpointError(f"GPT-2 config sets {key}=true, which Strata's GPT does not do.")
    if hf_config.get("scale_attn_weights", True) is False:
        raise CheckpointError("GPT-2 config sets scale_attn_weights=false; Strata always scales by 1/sqrt(D).")


def _strip(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        k = k.removeprefix("transformer.")
        if k.endswith((".attn.bias", ".attn.masked_bias")) and k.count(".") == 3:
            continue  # h.N.attn.bias: the causal-mask buffer, not a parameter
        out[k] = v
    return out


def to_strata(tensors: dict[str, np.ndarray], hf_config: dict) -> dict[str, Source]:
    """Flat Strata parameters ("block_0/attn/qkv/kernel" -> source) of a GPT-2 checkpoint."""
    _check(hf_config)
    t = _strip(tensors)
    heads = hf_config["n_head"]
    out: dict[str, Source] = {}

    def put(path: str, name: str, fn=lambda a: a) -> None:
        a = take(t, name)
        out[path] = (name, tuple(a.shape), fn(np.asarray(a, np.float32)))

    def reshaped(*shape: int):
        def fn(a: np.ndarray) -> np.ndarray:
            # A size that does not fit stays as it is: the shape check then names the
            # Hugging Face tensor and both shapes.
            return a.reshape(shape) if a.size == np.prod(shape) else a
        return fn

    width = hf_config["n_embd"]
    head_dim = width // heads
    put("token_embed/embedding", "wte.weight")
    put("pos_embed", "wpe.weight")
    for i in range(hf_config["n_layer"]):
        p, h = f"block_{i}", f"h.{i}"
        for ln, hf_ln in (("ln_attn", "ln_1"), ("ln_mlp", "ln_2")):
            put(f"{p}/{ln}/scale", f"{h}.{hf_ln}.weight")
            put(f"{p}/{ln}/bias", f"{h}.{hf_ln}.bias")
        put(f"{p}/attn/qkv/kernel", f"{h}.attn.c_attn.weight", reshaped(width, 3, heads, head_dim))  # (E, 3, H, D)
        put(f"{p}/attn/qkv/bias", f"{h}.attn.c_attn.bias", reshaped(3, heads, head_dim))  # (3, H, D)
        put(f"{p}/attn/out/kernel", f"{h}.attn.c_proj.weight", reshaped(heads, head_dim, width))  # (H, D, E)
        put(f"{p}/attn/out/bias", f"{h}.attn.c_proj.bias")
        put(f"{p}/mlp_in/kernel", f"{h}.mlp.c_fc.weight")
        put(f"{p}/mlp_in/bias", f"{h}.mlp.c_fc.bias")
        put(f"{p}/mlp_out/kernel", f"{h}.mlp.c_proj.weight")
        put(f"{p}/mlp_out/bias", f"{h}.mlp.c_proj.bias")
    put("ln_final/scale", "ln_f.weight")
    put("ln_final/bias", "ln_f.bias")
    if not hf_config.get("tie_word_embeddings", True):
        put("head/kernel", "lm_head.weight", lambda a: a.T)  # (V, E) -> (E, V)
    return out


def from_strata(flat: dict[str, np.ndarray], fields: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """(GPT-2 tensors, config.json dict) of flat Strata GPT parameters and its fields."""
    if fields.get("positions", "learned") != "learned":
        raise CheckpointError(f"GPT-2 has learned positions; this run uses {fields['positions']!r} "
                              "and cannot be exported as GPT-2.")
    vocab, width = flat["token_embed/embedding"].shape
    max_len = flat["pos_embed"].shape[0]
    num_layers = sum(1 for k in flat if k.endswith("/attn/qkv/kernel"))
    heads = flat["block_0/attn/qkv/kernel"].shape[2]
    mlp = flat["block_0/mlp_in/kernel"].shape[1]
    tied = bool(fields.get("tie_embeddings", False))
    t: dict[str, np.ndarray] = {"transformer.wte.weight": flat["token_embed/embedding"],
                                "transformer.wpe.weight": flat["pos_embed"]}
    for i in range(num_layers):
        p, h = f"block_{i}", f"transformer.h.{i}"
        for ln, hf_ln in (("ln_attn", "ln_1"), ("ln_mlp", "ln_2")):
            t[f"{h}.{hf_ln}.weight"] = flat[f"{p}/{ln}/scale"]
            t[f"{h}.{hf_ln}.bias"] = flat[f"{p}/{ln}/bias"]
        t[f"{h}.attn.c_attn.weight"] = flat[f"{p}/attn/qkv/kernel"].reshape(width, 3 * width)
        t[f"{h}.attn.c_attn.bias"] = flat[f"{p}/attn/qkv/bias"].reshape(3 * width)
        t[f"{h}.attn.c_proj.weight"] = flat[f"{p}/attn/out/kernel"].reshape(width, width)
        t[f"{h}.attn.c_proj.bias"] = flat[f"{p}/attn/out/bias"]
        t[f"{h}.mlp.c_fc.weight"] = flat[f"{p}/mlp_in/kernel"]
        t[f"{h}.mlp.c_fc.bias"] = flat[f"{p}/mlp_in/bias"]
        t[f"{h}.mlp.c_proj.weight"] = flat[f"{p}/mlp_out/kernel"]
        t[f"{h}.mlp.c_proj.bias"] = flat[f"{p}/mlp_out/bias"]
    t["transformer.ln_f.weight"] = flat["ln_final/scale"]
    t["transformer.ln_f.bias"] = flat["ln_final/bias"]
    if not tied:
        t["lm_head.weight"] = flat["head/kernel"].T
    dropout = float(fields.get("dropout", 0.0))
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": int(vocab), "n_positions": int(max_len), "n_embd": int(width),
        "n_layer": num_layers, "n_head": int(heads), "n_inner": int(mlp),
        "activation_function": "gelu_new" if fields.get("gelu_approximate", True) else "gelu",
        "layer_norm_epsilon": float(fields.get("layer_norm_epsilon", 1e-5)),
        "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": 0.0,
        "tie_word_embeddings": tied, "torch_dtype": "float32",
    }
    return t, config
