"""Input attributions for classifiers: vanilla gradients, SmoothGrad, Integrated Gradients,
attention rollout for Transformers, and per-token attributions for language models
(gradient x input and Integrated Gradients on the token embeddings).

Pure, jittable and batched functions of `logits_fn(x) -> logits` (B, ...) -> (B, C), the
inputs x (B, ...) and the class to explain per example, `targets` (B,). Each returns an
attribution per input element, (B, ...). The explained quantity is the target's logit
(not its probability: the softmax saturates, and completeness is stated for it).

References: Simonyan et al. 2014 (gradients); Smilkov et al. 2017 (SmoothGrad: noise of
10-20% of the input range); Sundararajan et al. 2017 (Integrated Gradients: completeness,
sum_i IG_i(x) = f(x) - f(baseline)); Abnar & Zuidema 2020 (attention rollout).
"""
from __future__ import annotations

import flax.linen as nn
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


def attention_rollout(attentions: list[jax.Array], residual: float = 0.5) -> jax.Array:
    """(B, N, N) how much each token of the last layer draws on each input token (Abnar &
    Zuidema 2020): per layer the head-averaged attention (B, H, N, N), mixed with the
    identity for the residual connection, A' = residual I + (1 - residual) A, and the
    product A'_L ... A'_1. Rows of row-stochastic attention sum to 1, and so do the
    rollout's; identity attention gives I, uniform attention U gives
    r^L I + (1 - r^L) U (U is idempotent)."""
    out = None
    for a in attentions:
        a = jnp.mean(a.astype(jnp.float32), axis=1)  # (B, N, N)
        a = residual * jnp.eye(a.shape[-1], dtype=a.dtype)[None] + (1 - residual) * a
        out = a if out is None else jnp.einsum("bij,bjk->bik", a, out)
    if out is None:
        raise ValueError("attention_rollout needs at least one layer's attention.")
    return out


def sown_attention(intermediates: dict) -> list[jax.Array]:
    """The `attention` arrays a model sowed, in block order (block_0, block_1, ...)."""
    def index(name: str) -> int:
        return int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else -1
    blocks = sorted((k for k, v in intermediates.items() if isinstance(v, dict) and "attention" in v),
                    key=index)
    return [intermediates[k]["attention"][0] for k in blocks]


def with_embeddings(fn, transform):
    """fn() with the output of every `nn.Embed` lookup (the token embeddings) passed through
    `transform`, by method interception: the model needs no hook of its own."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Embed) and context.method_name == "__call__":
            return transform(out)
        return out
    with nn.intercept_methods(interceptor):
        return fn()


def token_attributions(logits_fn, tokens: jax.Array, target: jax.Array, *,
                       steps: int = 64) -> dict[str, jax.Array]:
    """What each token contributes to the logit of `target` (B,) at the last position of a
    language model `logits_fn(tokens) -> (B, T, V)`: per token (B, T), gradient x input on
    its embedding (summed over the embedding) and Integrated Gradients from all-zero
    embeddings (midpoint rule, `steps` points), which sum to f - f(zero embeddings)."""
    captured = []
    with_embeddings(lambda: logits_fn(tokens), lambda e: captured.append(e) or e)
    emb = captured[0].astype(jnp.float32)  # (B, T, E)

    def f(scale, delta):  # the target logit with embeddings scale * e + delta
        logits = with_embeddings(lambda: logits_fn(tokens),
                                 lambda e: (scale * e.astype(jnp.float32) + delta).astype(e.dtype))
        return jnp.take_along_axis(logits[:, -1].astype(jnp.float32), target[:, None], 1)[:, 0]

    grad = jax.grad(lambda d, a: f(a, d).sum())
    zero = jnp.zeros_like(emb)

    def body(total, k):
        return total + grad(zero, (k + 0.5) / steps), None

    path, _ = jax.lax.scan(body, zero, jnp.arange(steps, dtype=jnp.float32))
    return {"grad_x_input": (grad(zero, 1.0) * emb).sum(-1), "ig": (path / steps * emb).sum(-1),
            "logit": f(1.0, zero), "baseline_logit": f(0.0, zero)}
