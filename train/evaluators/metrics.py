"""`metrics`: the task's own eval metrics over a split, every example exactly once
(classification: loss, accuracy, top-5; language models: loss, accuracy, bits per byte;
diffusion: the denoising loss)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from data import pipeline
from train.evaluators.base import EvalContext, Evaluator
from train.sharding import to_global


@jax.jit
def _accumulate(totals: dict, sums: dict) -> dict:
    """totals + sums, leaf by leaf: one dispatch per batch, no host sync."""
    return jax.tree.map(lambda a, b: a + b, totals, sums)


def run_eval(eval_step: Callable, state: Any, source: Sequence[dict], *, mesh, batch_size: int,
             preprocess: str, max_batches: int | None = None) -> dict[str, float]:
    """Means of the task's eval metrics over `source` (padded rows masked out)."""
    totals = None  # {name: (sum, weight)} on the device until the end
    for local in pipeline.eval_batches(source, global_batch_size=batch_size, preprocess=preprocess,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       max_batches=max_batches):
        sums = eval_step(state, to_global(local, mesh))
        totals = sums if totals is None else _accumulate(totals, sums)
    totals = jax.device_get(totals or {})
    return {name: float(s) / max(float(w), 1e-12) for name, (s, w) in totals.items()}


@dataclasses.dataclass
class Metrics(Evaluator):
    """The batched `task.eval_sums` over the split, then `task.finalize_eval`."""

    def run(self, ctx: EvalContext) -> dict[str, float]:
        means = run_eval(ctx.eval_step, ctx.state, ctx.source(self.split, self.preprocess), mesh=ctx.mesh,
                         batch_size=self.batch_size, preprocess=self.preprocess,
                         max_batches=self.max_batches or None)
        return ctx.task.finalize_eval(means)
