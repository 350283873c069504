"""Optax optimizers built in one place from `config.optimizer`.

    optimizer.name          "sgd" | "adamw"
    optimizer.learning_rate peak learning rate
    optimizer.schedule      "cosine" | "constant"   (after `warmup_steps` of linear warmup)
    optimizer.weight_decay  decoupled, on weights with ndim > 1 (not biases or norm scales)
    optimizer.grad_clip     global-norm clip; 0 disables
    optimizer.momentum / nesterov (sgd), b1 / b2 / eps (adamw)
"""
from __future__ import annotations

import jax
import ml_collections
import optax

from errors import ConfigError, unknown_name_message

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to 0 or constant."""
    peak = config.learning_rate
    warmup = min(config.get("warmup_steps", 0), max(total_steps - 1, 0))
    name = config.get("schedule", "cosine")
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
            end_value=peak * config.get("end_lr_fraction", 0.0))
    if name == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    raise ConfigError(unknown_name_message("learning-rate schedule", name, list(SCHEDULES)))


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The optax chain named by `config` (clip -> optimizer -> decoupled weight decay)."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.get("grad_clip", 0.0):
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    name = config.name
    wd = config.get("weight_decay", 0.0)
    if name == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=_decay_mask))
        parts.append(optax.sgd(schedule, momentum=config.get("momentum", 0.9) or None,
                               nesterov=config.get("nesterov", False)))
    elif name == "adamw":
        parts.append(optax.adamw(schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999),
                                 eps=config.get("eps", 1e-8), weight_decay=wd, mask=_decay_mask))
    else:
        raise ConfigError(unknown_name_message("optimizer", name, list(OPTIMIZERS)))
    return optax.chain(*parts)
