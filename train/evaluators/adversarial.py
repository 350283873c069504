"""`adversarial`: clean and robust accuracy of a classifier under PGD, for a list of budgets.

    c.evals.adv = evaluator("adversarial", norm="linf", budgets=(0.03, 0.1), steps=10,
                            max_batches=2)
    # -> eval/adv/accuracy, eval/adv/accuracy@linf=0.03, eval/adv/accuracy@linf=0.1

The batches come through the same pipeline and sharding as the `metrics` evaluator; the
model runs in eval mode with the EMA parameters when kept (`train.step.eval_apply`);
attacks work in the model's input space within the task's `input_range`. An example broken
at a smaller budget counts as broken at every larger one (train/limits/attacks.py
`robustness_sums`), so the reported accuracy never rises with the budget.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import pipeline
from errors import ConfigError
from train import step as step_lib
from train.evaluators.base import EvalContext, Evaluator
from train.limits import attacks
from train.sharding import to_global


def budget_key(norm: str, eps: float) -> str:
    """The metric name of one budget, e.g. `accuracy@linf=0.03`."""
    return f"accuracy@{norm}={eps:g}"


def _attack_sums(state, batch, rng, budgets, *, model, task, settings: dict):
    """Jitted: masked clean / robust counts of one global batch (see `robustness_sums`)."""
    logits_fn = task.logits_fn(step_lib.eval_apply(model, state))
    return attacks.robustness_sums(logits_fn, batch[task.input_key], batch[task.label_key],
                                   batch["mask"], rng, budgets, bounds=task.input_range, **settings)


@dataclasses.dataclass
class Adversarial(Evaluator):
    """Fields besides the common ones: the attack's norm, budgets (ball radii in input
    units), PGD steps, step size (relative to the budget; 0 = 2.5 / steps), random
    restarts (the worst case per example is kept), random start, and the attack's seed."""
    norm: str = "linf"
    budgets: Sequence[float] = (0.01, 0.03, 0.1)
    steps: int = 10
    step_size: float = 0.0
    restarts: int = 1
    random_init: bool = True
    seed: int = 0

    def __post_init__(self):
        attacks.check_norm(self.norm)
        self.budgets = tuple(sorted(float(b) for b in self.budgets))
        where = f"evaluator {self.name!r} (adversarial)"
        if not self.budgets or any(not math.isfinite(b) or b < 0 for b in self.budgets):
            raise ConfigError(f"{where} needs budgets: finite numbers >= 0, got {self.budgets}.")
        if self.steps < 1 or self.restarts < 1 or self.step_size < 0:
            raise ConfigError(f"{where} needs steps >= 1, restarts >= 1 and step_size >= 0, got "
                              f"{self.steps}, {self.restarts}, {self.step_size}.")
        self._jitted: dict[int, Any] = {}

    def check(self, task, source) -> None:
        if not all(hasattr(task, a) for a in ("logits_fn", "input_range", "input_key", "label_key")):
            raise ConfigError(f"evaluator {self.name!r} (adversarial) needs a classification task, "
                              f"got {type(task).__name__}.")

    def keys(self) -> list[str]:
        """The robust-accuracy metric names, in budget order."""
        return [budget_key(self.norm, eps) for eps in self.budgets]

    def _compiled(self, model, task):
        key = id(model)
        if key not in self._jitted:
            settings = dict(norm=self.norm, steps=self.steps, step_size=self.step_size,
                            restarts=self.restarts, random_init=self.random_init)
            self._jitted[key] = jax.jit(partial(_attack_sums, model=model, task=task, settings=settings))
        return self._jitted[key]

    def measure(self, ctx: EvalContext, source: Sequence[dict]) -> tuple[float, list[float], int]:
        """(clean accuracy, robust accuracy per budget, examples) over `source`."""
        fn = self._compiled(ctx.task_context.model, ctx.task)
        budgets = jnp.asarray(self.budgets, jnp.float32)
        rng = jax.random.PRNGKey(self.seed)
        totals = None
        for b, local in enumerate(pipeline.eval_batches(
                source, global_batch_size=self.batch_size, preprocess=self.preprocess,
                process_index=jax.process_index(), process_count=jax.process_count(),
                max_batches=self.max_batches or None)):
            sums = fn(ctx.state, to_global(local, ctx.mesh), jax.random.fold_in(rng, b), budgets)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        totals = jax.device_get(totals)
        count = max(float(totals["count"]), 1.0)
        robust = [float(r) / count for r in np.asarray(totals["robust"])]
        return float(totals["clean"]) / count, robust, int(totals["count"])

    def run(self, ctx: EvalContext) -> dict[str, float]:
        clean, robust, _ = self.measure(ctx, ctx.source(self.split, self.preprocess))
        return {"accuracy": clean, **dict(zip(self.keys(), robust))}
