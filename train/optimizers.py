"""Optax optimizers built in one place from `config.optimizer`.

    optimizer.name          "sgd" | "adamw"
    optimizer.learning_rate peak learning rate
    optimizer.schedule      "cosine" | "constant" | "piecewise" | "rsqrt"  (after `warmup_steps` of linear warmup;
                            rsqrt: peak * sqrt(warmup_steps / step), Vaswani et al. 2017)
    optimizer.boundaries / decay_factor   piecewise: the rate x decay_factor at each step in boundaries
    optimizer.weight_decay  decoupled, on weights with ndim > 1 (not biases or norm scales)
    optimizer.grad_clip     global-norm clip; 0 disables
    optimizer.momentum / nesterov (sgd), b1 / b2 / eps (adamw)

With LoRA (`model.lora_rank` > 0) only the adapters and the `model.lora_train` patterns
train (`trainable_mask`): the optimizer is an `optax.multi_transform` whose frozen part is
`set_to_zero`, so the frozen weights get exactly zero updates, no weight decay, no share
of the clipping norm, and no optimizer state (their entries in it are empty `MaskedNode`s).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from errors import ConfigError, unknown_name_message
from models.layers import LORA_PREFIXES

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant", "piecewise", "rsqrt")


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay, constant, or piecewise constant
    (x `decay_factor` from each step in `boundaries` on, as in He et al. 2016)."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    name = config.schedule
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
            end_value=peak * config.end_lr_fraction)
    if name == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    if name == "piecewise":
        return _piecewise(peak, warmup, tuple(config.boundaries), config.decay_factor)
    if name == "rsqrt":
        # The Transformer's "noam" schedule: d^-0.5 * min(step^-0.5, step * warmup^-1.5) is
        # this with peak = d^-0.5 * warmup^-0.5 (7.0e-4 for d=512, warmup 4000).
        if warmup < 1:
            raise ConfigError("optimizer.schedule=rsqrt needs optimizer.warmup_steps >= 1.")
        def rsqrt(step):
            step = jnp.maximum(jnp.asarray(step, jnp.float32), 1.0)
            return peak * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))
        return rsqrt
    raise ConfigError(unknown_name_message("learning-rate schedule", name, list(SCHEDULES)))


def _piecewise(peak: float, warmup: int, boundaries: tuple[int, ...], factor: float) -> optax.Schedule:
    """`peak` x `factor`**k from the k-th boundary (a global step) on, after the warm-up."""
    steps = list(boundaries)
    if not steps or any(int(b) != b or b <= warmup for b in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"optimizer.boundaries must be increasing whole steps after the "
                          f"{warmup} warm-up steps for schedule 'piecewise', got {boundaries!r}; "
                          f"e.g. (32000, 48000).")
    if not 0 < factor <= 1:
        raise ConfigError(f"optimizer.decay_factor must be in (0, 1], got {factor}; e.g. 0.1.")
    # join_schedules hands the piecewise part the steps counted from the end of warm-up.
    decay = optax.piecewise_constant_schedule(peak, {int(b) - warmup: factor for b in boundaries})
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def param_path(path: tuple) -> str:
    """"block_0/attn/qkv/kernel" of a tree_util key path (a box's `.value` left out)."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def trainable_mask(patterns: tuple[str, ...]) -> Callable[[Any], Any]:
    """params -> a tree of bools: True for the LoRA adapters and for every parameter whose
    path ("head/kernel") one of `patterns` (regexes) matches whole."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as e:
        raise ConfigError(f"model.lora_train has a bad regular expression ({e}); "
                          "write patterns such as 'head/.*'.") from None

    def trainable(path: tuple) -> bool:
        name = param_path(path)
        return (name.rsplit("/", 1)[-1].startswith(LORA_PREFIXES)
                or any(p.fullmatch(name) for p in compiled))

    return lambda params: jax.tree_util.tree_map_with_path(lambda p, _: trainable(p), params)


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                    trainable: Callable[[Any], Any] | None = None) -> optax.GradientTransformation:
    """The optax chain named by `config` (clip -> optimizer -> decoupled weight decay);
    with `trainable` (params -> bool tree, see `trainable_mask`) it updates only those
    parameters and keeps no state for the others."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    name = config.name
    wd = config.weight_decay
    if name == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=_decay_mask))
        parts.append(optax.sgd(schedule, momentum=config.momentum or None,
                               nesterov=config.nesterov))
    elif name == "adamw":
        parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                                 eps=config.eps, weight_decay=wd, mask=_decay_mask))
    else:
        raise ConfigError(unknown_name_message("optimizer", name, list(OPTIMIZERS)))
    if trainable is None:
        return optax.chain(*parts)
    labels = lambda params: jax.tree.map(lambda t: "train" if t else "frozen", trainable(params))  # noqa: E731
    return optax.multi_transform({"train": optax.chain(*parts), "frozen": optax.set_to_zero()}, labels)
