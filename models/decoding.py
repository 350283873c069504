"""The decoding state of Strata's autoregressive token models (GPT, RNN language models).

A model that takes `decode=True` keeps what one step hands to the next (GPT's keys and
values and its write index, an RNN's carries) in the "cache" collection:

    cache = init_cache(model, batch_size)
    logits, upd = model.apply({"params": params, "cache": cache}, tokens, train=False,
                              decode=True, mutable=["cache"])   # tokens: (B, 1) or a (B, T) prefill
    cache = upd["cache"]

This is the one place that builds that state; `train.tasks.language_model` samples with it.
"""
from __future__ import annotations

import functools
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=16)
def _cache_shapes(model: nn.Module, batch_size: int) -> Any:
    length = getattr(model, "max_len", None) or 1
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    return jax.eval_shape(partial(model.init, train=False, decode=True), jax.random.key(0),
                          tokens)["cache"]


def init_cache(model: nn.Module, batch_size: int = 1) -> Any:
    """The all-zero decoding state of a token model for `batch_size` sequences.

    Shapes come from `model.init(..., decode=True)` on (batch_size, max_len) int tokens
    ((batch_size, 1) when the model has no `max_len`, as an RNN), traced with
    `jax.eval_shape` once per (model, batch_size) and never run; `init` itself leaves the
    cache at zeros, so this equals `model.init(...)["cache"]`.

    Returns:
      GPT: {"cache_index": (), "block_i": {"attn": {"cached_key", "cached_value":
      (B, max_len, H, D)}}}; RNN: {"carry_i": (c, h) for an LSTM or h for a GRU, (B, hidden)}.
    """
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _cache_shapes(model, batch_size))
