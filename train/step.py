"""The pure, top-level train and eval steps: `(state, batch) -> (state, metrics)`.

Per-step randomness is `fold_in(state.rng, state.step)`, so a resumed run draws the
same numbers as an uninterrupted one. A step whose loss or gradient is not finite
leaves the state unchanged and reports `nonfinite=1`; the loop then stops the run, and
no non-finite state can reach a checkpoint.
"""
from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from errors import ConfigError
from train.state import TrainState
from train.tasks.base import Batch, Metrics, Task


def _make_apply(model: nn.Module, params: Any, model_state: dict, train: bool,
                dropout_rng: jax.Array | None):
    """apply(*inputs) -> (output, updated collections); batch statistics update when training."""
    variables = {"params": params, **model_state}
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
    mutable = [k for k in model_state if k != "cache"] if train else []

    def apply(*args, **kwargs):
        if mutable:
            return model.apply(variables, *args, train=train, rngs=rngs, mutable=mutable, **kwargs)
        return model.apply(variables, *args, train=train, rngs=rngs, **kwargs), model_state
    return apply


def _split_microbatches(batch: Batch, k: int) -> Batch:
    """(B, ...) -> (k, B/k, ...); microbatch j takes rows j, j+k, ... so every device
    keeps its own rows (no resharding when B is split over data-parallel devices)."""
    def split(x):
        if x.shape[0] % k:
            raise ConfigError(f"batch of {x.shape[0]} rows cannot be split into train.grad_accum={k} "
                             "equal microbatches; make the batch size a multiple of it.")
        return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def _pick(tree: Any, flags: list[bool]) -> list:
    """The leaves of `tree` whose flag is True, in tree order."""
    return [leaf for leaf, f in zip(jax.tree.leaves(tree), flags) if f]


def _put(part: list, tree: Any, flags: list[bool]) -> Any:
    """`tree` with its flagged leaves replaced, in order, by those of `part`."""
    leaves, treedef = jax.tree.flatten(tree)
    it = iter(part)
    return treedef.unflatten([next(it) if f else leaf for leaf, f in zip(leaves, flags)])


def train_step(state: TrainState, batch: Batch, *, model: nn.Module, task: Task,
               tx: optax.GradientTransformation, ema_decay: float = 0.0,
               grad_accum: int = 1, trainable: Callable[[Any], Any] | None = None
               ) -> tuple[TrainState, Metrics]:
    """One optimizer update on `batch` (averaged over `grad_accum` microbatches); with
    `trainable` (LoRA) only those parameters are differentiated and updated."""
    rng = jax.random.fold_in(state.rng, state.step)
    # With `trainable` only those leaves are differentiated: the frozen weights are
    # constants of the step, so no gradient is computed for them.
    flags = None if trainable is None else jax.tree.leaves(trainable(state.params))
    variables = state.params if flags is None else _pick(state.params, flags)

    def loss_fn(variables, model_state, microbatch, rng):
        task_rng, dropout_rng = jax.random.split(rng)
        params = variables if flags is None else _put(variables, state.params, flags)
        apply = _make_apply(model, params, model_state, True, dropout_rng)
        loss, metrics, new_model_state = task.loss(apply, microbatch, task_rng)
        return loss, (metrics, new_model_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        (loss, (metrics, model_state)), grads = grad_fn(variables, state.model_state, batch, rng)
    else:
        micro = _split_microbatches(batch, grad_accum)

        def body(carry, xs):
            grads_sum, model_state = carry
            mb, i = xs
            (_, (m, model_state)), g = grad_fn(variables, model_state, mb, jax.random.fold_in(rng, i))
            return (jax.tree.map(jnp.add, grads_sum, g), model_state), m

        zeros = jax.tree.map(jnp.zeros_like, variables)
        (grads, model_state), metrics = jax.lax.scan(
            body, (zeros, state.model_state), (micro, jnp.arange(grad_accum)))
        grads = jax.tree.map(lambda g: g / grad_accum, grads)
        metrics = jax.tree.map(jnp.mean, metrics)

    grad_norm = optax.global_norm(grads)  # of what trains
    if flags is not None:  # zeros where frozen: the optimizer's set_to_zero ignores them
        grads = _put(grads, jax.tree.map(jnp.zeros_like, state.params), flags)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if flags is not None:  # frozen weights stay the very arrays (w + 0 would turn -0.0 into 0.0)
        params = _put(_pick(params, flags), state.params, flags)
    ema = state.ema_params
    if ema is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    new = state.replace(step=state.step + 1, params=params, model_state=model_state,
                        opt_state=opt_state, ema_params=ema)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    # Keep the old state (but count the step) when anything went non-finite.
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state.replace(step=state.step + 1))
    metrics = dict(metrics, grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32))
    return new, metrics


def eval_apply(model: nn.Module, state: TrainState):
    """The `apply` of evaluation: eval mode, the EMA parameters when kept. Evaluators and
    the `attack`/`explain` verbs run (and differentiate) the model through it."""
    return _make_apply(model, state.eval_params(), state.model_state, False, None)


def eval_step(state: TrainState, batch: Batch, *, model: nn.Module, task: Task):
    """Masked metric sums on one eval batch, with the EMA parameters when kept."""
    apply = eval_apply(model, state)
    return task.eval_sums(apply, batch, jax.random.fold_in(state.rng, 2**31 - 1))


def jit_train_step(model, task, tx, state_shardings, batch_sharding, *, ema_decay: float = 0.0,
                   grad_accum: int = 1, trainable: Callable[[Any], Any] | None = None):
    """`train_step` jitted with explicit shardings and the state donated."""
    fn = partial(train_step, model=model, task=task, tx=tx, ema_decay=ema_decay, grad_accum=grad_accum,
                 trainable=trainable)
    return jax.jit(fn, in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0)


def jit_eval_step(model, task, state_shardings, batch_sharding):
    fn = partial(eval_step, model=model, task=task)
    return jax.jit(fn, in_shardings=(state_shardings, batch_sharding))


class _NotCompiling:
    """What `compile_in_background` returns where nothing was started: join() returns."""

    def join(self) -> None:
        pass


NOT_COMPILING = _NotCompiling()


def compile_in_background(jitted: Callable, *abstract_args: Any) -> threading.Thread:
    """Starts tracing and compiling `jitted` for these abstract arguments (ShapeDtypeStructs
    with the shardings the real arguments will have, else JAX traces anew) on a thread, so that the first real call finds it compiled (JAX shares the trace and the
    executable between `.lower().compile()` and calls). Start-up overlaps with it: the
    model's trace (Python) runs while the main thread waits on C++ (the init's cache read
    or compile, a checkpoint restore), and the step's own compile or cache read (C++, GIL
    released) while the main thread opens the data and the writers. Any error is left to
    the real call, which raises it where it always did. Join the thread before exiting."""
    def compile_() -> None:
        try:
            jitted.lower(*abstract_args).compile()
        except Exception:  # noqa: BLE001 -- the first real call raises it properly
            pass
    thread = threading.Thread(target=compile_, name="strata-compile", daemon=True)
    thread.start()
    return thread
