"""The train state pytree and its sharded creation.

Shardings are derived from `jax.eval_shape` of the init function, so nothing is
allocated before its placement is known, and `init` itself is jitted with those
out-shardings: a model larger than one device's memory can be created.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from train import sharding as sharding_lib
from train.tasks.base import Batch, Task


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # () int32
    params: Any
    model_state: dict        # other Linen collections, e.g. {"batch_stats": ...}
    opt_state: Any
    rng: jax.Array           # (2,) uint32 raw PRNG key; per-step keys are fold_in(rng, step)
    ema_params: Any = None   # exponential moving average of params, when train.ema_decay > 0

    def eval_params(self) -> Any:
        """EMA parameters when kept, else the live ones: what eval and sampling use."""
        return self.params if self.ema_params is None else self.ema_params


def _init_fn(model: nn.Module, task: Task, tx: optax.GradientTransformation,
             example_batch: Batch, seed: int, ema: bool):
    def init() -> TrainState:
        rng = jax.random.PRNGKey(seed)
        init_rng, state_rng = jax.random.split(rng)
        args, kwargs = task.init_args(example_batch)
        variables = model.init({"params": init_rng, "dropout": init_rng}, *args, train=False, **kwargs)
        variables = dict(variables)
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
            opt_state=tx.init(params), rng=state_rng,
            ema_params=jax.tree.map(jnp.copy, params) if ema else None)
    return init


def abstract_state_and_shardings(model: nn.Module, task: Task, tx: optax.GradientTransformation,
                                 example_batch: Batch, seed: int, ema: bool, mesh,
                                 rules) -> tuple[TrainState, Any]:
    """(unboxed abstract state, matching NamedShardings) without allocating anything."""
    init = _init_fn(model, task, tx, example_batch, seed, ema)
    abstract_boxed = jax.eval_shape(init)
    shardings = sharding_lib.logical_shardings(abstract_boxed, mesh, rules)
    return nn.unbox(abstract_boxed), shardings


def create_train_state(model: nn.Module, task: Task, tx: optax.GradientTransformation,
                       example_batch: Batch, seed: int, ema: bool, mesh, rules) -> tuple[TrainState, Any]:
    """A freshly initialised state placed on `mesh`, and its shardings."""
    init = _init_fn(model, task, tx, example_batch, seed, ema)
    _, shardings = abstract_state_and_shardings(model, task, tx, example_batch, seed, ema, mesh, rules)
    state = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
    return state, shardings


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def count_trainable(params: Any, trainable) -> int:
    """Parameters that `trainable` (params -> bool tree, see train/optimizers.py) selects."""
    return sum(int(x.size) for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable(params))) if t)
