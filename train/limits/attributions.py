"""Input attributions for classifiers: vanilla gradients, SmoothGrad, Integrated Gradients.

Pure, jittable and batched functions of `logits_fn(x) -> logits` (B, ...) -> (B, C), the
inputs x (B, ...) and the class to explain per example, `targets` (B,). Each returns an
attribution per input element, (B, ...). The explained quantity is the target's logit
(not its probability: the softmax saturates, and completeness is stated for it).

References: Simonyan et al. 2014 (gradients); Smilkov et al. 2017 (SmoothGrad: noise of
10-20% of the input range); Sundararajan et al. 2017 (Integrated Gradients: completeness,
sum_i IG_i(x) = f(x) - f(baseline)).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from train.limits.attacks import LogitsFn


def target_logits(logits_fn: LogitsFn, x: jax.Array, targets: jax.Array) -> jax.Array:
    """(B,) the logit of each example's target class."""
    logits = logits_fn(x).astype(jnp.float32)  # (B, C)
    return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def vanilla_gradients(logits_fn: LogitsFn, x: jax.Array, targets: jax.Array) -> jax.Array:
    """(B, ...) d logit_target / d x, each row by its own example (rows independent)."""
    return jax.grad(lambda v: target_logits(logits_fn, v, targets).sum())(x)


def smoothgrad(logits_fn: LogitsFn, x: jax.Array, targets: jax.Array, rng: jax.Array, *,
               samples: int = 32, sigma: float = 0.3) -> jax.Array:
    """(B, ...) the mean gradient over `samples` copies of x with Gaussian noise of standard
    deviation `sigma` (in input units); sigma 0 gives the vanilla gradients."""
    def body(total, key):
        noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        return total + vanilla_gradients(logits_fn, noisy, targets), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), jax.random.split(rng, samples))
    return total / samples


def integrated_gradients(logits_fn: LogitsFn, x: jax.Array, targets: jax.Array, *,
                         baseline: jax.Array | None = None, steps: int = 64) -> jax.Array:
    """(B, ...) (x - baseline) times the mean gradient on the straight path from the
    baseline (default zeros; same shape as x, or broadcastable rows) to x, by the midpoint
    rule with `steps` points: the attributions sum to f(x) - f(baseline) up to O(1/steps^2)
    for a smooth model."""
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    diff = x - baseline

    def body(total, k):
        alpha = (k + 0.5) / steps
        return total + vanilla_gradients(logits_fn, baseline + alpha * diff, targets), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), jnp.arange(steps, dtype=x.dtype))
    return diff * total / steps
