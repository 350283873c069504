"""Scaled dot-product attention with the implementation chosen per backend.

On GPU and TPU this is `jax.nn.dot_product_attention` (XLA's fused attention, cuDNN where
it applies). On the CPU the same maths is written as two einsums around a softmax: XLA:CPU
compiles jax.nn.dot_product_attention's backward pass (a vmapped reduction over its
grouped-query layout) into a slow reduction, and the plain form runs the attention forward
and backward faster (figures in README.md, "Speed"; `python -m benchmarks.run --only lm`).
Both give the same values up to float rounding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _einsum_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray | None,
                      is_causal: bool) -> jnp.ndarray:
    """softmax(q k^T / sqrt(D) + mask) v with float32 logits; shapes as `attention`."""
    t, s = q.shape[1], k.shape[1]
    logits = jnp.einsum("bthd,bshd->bhts", q * (q.shape[-1] ** -0.5), k).astype(jnp.float32)
    if is_causal:
        causal = jnp.tril(jnp.ones((t, s), bool))  # (T, S)
        mask = causal if mask is None else mask & causal.reshape((1,) * (mask.ndim - 2) + (t, s))
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # (B, H, T, S)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, *, mask: jnp.ndarray | None = None,
              is_causal: bool = False) -> jnp.ndarray:
    """Multi-head attention of queries over keys and values.

    Args:
      q: (B, T, H, D) queries; k, v: (B, S, H, D) keys and values.
      mask: optional boolean mask broadcastable to (B, H, T, S); True = attend.
      is_causal: query t attends only to keys s <= t (keys and queries aligned at 0).
    Returns:
      (B, T, H, D).
    """
    if jax.default_backend() == "cpu":
        return _einsum_attention(q, k, v, mask, is_causal)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
