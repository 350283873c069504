"""What a task gives the loop: how to call the model, the loss, eval metrics, sampling.

A task never holds parameters. The loop hands it `apply`, a function that runs the model
with the current variables and returns `(output, new_model_state)`; the task decides
which inputs the model gets. That is all that differs between families.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

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

    # Optional, host-side: `run.py sample` and the evaluators that judge samples.
    def check_sampling(self, settings: Any) -> None:
        """Raises a ConfigError for `config.sample` settings this task cannot use."""

    def sample(self, ctx: "TaskContext", settings: Any) -> "SampleOutput":
        """Samples from the model as `config.sample` (`settings`) says."""
        raise ConfigError(f"task {type(self).__name__} has no sampling; "
                          "sampling exists for language_model and diffusion tasks.")


@dataclasses.dataclass
class TaskContext:
    """What host-side task hooks may use: the model and its eval variables, the shapes of
    the data's features, the mesh, a random key and the workdir (for files they write)."""
    model: Any
    variables: dict
    data_info: Any           # tfds.core.DatasetInfo: feature shapes for generation
    mesh: Any
    rng: jax.Array
    workdir: str | None = None


@dataclasses.dataclass
class SampleOutput:
    """What `Task.sample` made: a line for the console, and (for images) the samples and
    the labels they were conditioned on, so an evaluator can judge them."""
    text: str
    images: np.ndarray | None = None
    labels: np.ndarray | None = None


def masked_mean_parts(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of values over real rows, number of real rows) for per-row `values`."""
    values = values.reshape(values.shape[0], -1).mean(axis=1)
    return jnp.sum(values * mask), jnp.sum(mask)
