"""The train state pytree and its sharded creation.

The init function is traced once (`jax.make_jaxpr`): its output shapes give the shardings,
so nothing is allocated before its placement is known, and its jaxpr, jitted with those
out-shardings, creates the state: a model larger than one device's memory can be created.
Tracing the Flax model is the slow part of start-up on a small model (~0.2-0.3 s for
ResNet-20), so the shapes, the shardings and the state all come from that one trace.

The compiled init depends on shapes only: the seed is an argument and the example batch
enters as zeros of its shapes (a Flax init reads its input's shape, not its values). So a
run with a new seed, or other data of the same shapes, reads the init from the persistent
compilation cache instead of compiling it again (+2.5 s per new seed for digits_resnet,
when the seed was a constant of the program).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

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


def seed_argument(seed: int) -> np.ndarray:
    """`seed` as the init's uint32 argument: PRNGKey of it equals PRNGKey(seed) for any
    Python int (PRNGKey keeps a seed's low 32 bits when 64-bit types are off)."""
    return np.uint32(seed % 2**32)


def _init_fn(model: nn.Module, task: Task, tx: optax.GradientTransformation,
             example_batch: Batch, ema: bool):
    # The dtypes JAX gives these values (int64 labels are int32 without x64), as before.
    shapes = {k: (np.shape(v), jax.dtypes.canonicalize_dtype(np.asarray(v).dtype))
              for k, v in example_batch.items()}

    def init(seed: jax.Array) -> TrainState:
        rng = jax.random.PRNGKey(seed)
        init_rng, state_rng = jax.random.split(rng)
        args, kwargs = task.init_args({k: jnp.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()})
        variables = model.init({"params": init_rng, "dropout": init_rng}, *args, train=False, **kwargs)
        variables = dict(variables)
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
            opt_state=tx.init(params), rng=state_rng,
            ema_params=jax.tree.map(jnp.copy, params) if ema else None)
    return init


@dataclasses.dataclass(frozen=True)
class InitPlan:
    """What one trace of the init function gives: the unboxed abstract state, its
    NamedShardings, and `create()`, which runs the traced init jitted onto them."""
    abstract: TrainState      # ShapeDtypeStructs
    shardings: Any            # NamedShardings, same tree
    jaxpr: ClosedJaxpr        # init's: (uint32 seed) -> leaves in the same order
    seed: int

    def create(self) -> TrainState:
        """A freshly initialised state placed on the mesh (the model is not traced again)."""
        treedef = jax.tree.structure(self.abstract)
        run = jaxpr_as_fun(self.jaxpr)
        return jax.jit(lambda seed: jax.tree.unflatten(treedef, run(seed)),
                       out_shardings=self.shardings)(seed_argument(self.seed))


def plan_train_state(model: nn.Module, task: Task, tx: optax.GradientTransformation,
                     example_batch: Batch, seed: int, ema: bool, mesh, rules) -> InitPlan:
    """Traces init once, without allocating anything (see the module docstring)."""
    init = _init_fn(model, task, tx, example_batch, ema)
    jaxpr, abstract_boxed = jax.make_jaxpr(init, return_shape=True)(seed_argument(seed))
    shardings = sharding_lib.logical_shardings(abstract_boxed, mesh, rules)
    # nn.Partitioned boxes hold one leaf each, so boxed and unboxed trees flatten alike.
    return InitPlan(nn.unbox(abstract_boxed), shardings, jaxpr, seed)


def create_train_state(model: nn.Module, task: Task, tx: optax.GradientTransformation,
                       example_batch: Batch, seed: int, ema: bool, mesh, rules) -> tuple[TrainState, Any]:
    """A freshly initialised state placed on `mesh`, and its shardings."""
    plan = plan_train_state(model, task, tx, example_batch, seed, ema, mesh, rules)
    return plan.create(), plan.shardings


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def count_trainable(params: Any, trainable) -> int:
    """Parameters that `trainable` (params -> bool tree, see train/optimizers.py) selects."""
    return sum(int(x.size) for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable(params))) if t)
