"""What a task gives the loop: how to call the model, the loss, eval metrics, sampling.

A task never holds parameters. The loop hands it `apply`, a function that runs the model
with the current variables and returns `(output, new_model_state)`; the task decides
which inputs the model gets. That is all that differs between families.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from errors import ConfigError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
# apply(*model_args, **model_kwargs) -> (model output, updated model collections)
ApplyFn = Callable[..., tuple[Any, dict]]
# name -> (weighted sum, total weight); the loop adds these over batches and divides
EvalSums = dict[str, tuple[jax.Array, jax.Array]]


class Task:
    """The interface. Subclasses are small dataclasses whose fields come from `config.task`."""

    def init_args(self, batch: Batch) -> tuple[tuple, dict]:
        """Positional and keyword arguments (besides `train`) for `model.init` on `batch`."""
        raise NotImplementedError

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        """(scalar loss, batch-mean metrics, new model collections) for one training batch."""
        raise NotImplementedError

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        """Masked sums for the eval metrics of one batch (`batch["mask"]` marks real rows)."""
        raise NotImplementedError

    def finalize_eval(self, means: dict[str, float]) -> dict[str, float]:
        """Derived eval metrics from the means (e.g. bits per byte from loss)."""
        return means

    # Optional, host-side: run after the batched eval (e.g. sample quality) and `run.py sample`.
    def extra_eval(self, ctx: "TaskContext") -> dict[str, float]:
        return {}

    def sample(self, ctx: "TaskContext", **kwargs: Any) -> str:
        raise ConfigError(f"task {type(self).__name__} has no sampling; "
                         "sampling exists for language_model and diffusion tasks.")


class TaskContext:
    """What host-side task hooks may use: the model, its eval variables, data, workdir."""

    def __init__(self, model, variables, config, workdir, data_info, mesh, rng):
        self.model = model
        self.variables = variables
        self.config = config
        self.workdir = workdir
        self.data_info = data_info
        self.mesh = mesh
        self.rng = rng


def masked_mean_parts(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of values over real rows, number of real rows) for per-row `values`."""
    values = values.reshape(values.shape[0], -1).mean(axis=1)
    return jnp.sum(values * mask), jnp.sum(mask)
