"""Evaluation: the task's metrics over a whole split, every example exactly once."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from data import pipeline
from train.sharding import batch_sharding


def to_global(local_batch: dict, mesh) -> dict:
    """This process's rows -> global jax.Arrays sharded over (data, fsdp)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def run_eval(eval_step: Callable, state: Any, source: Sequence[dict], *, mesh, batch_size: int,
             preprocess: str, max_batches: int | None = None) -> dict[str, float]:
    """Means of the task's eval metrics over `source` (padded rows masked out)."""
    totals: dict[str, list] = {}
    for local in pipeline.eval_batches(source, global_batch_size=batch_size, preprocess=preprocess,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       max_batches=max_batches):
        sums = eval_step(state, to_global(local, mesh))
        for name, (s, w) in sums.items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] = acc[0] + s
            acc[1] = acc[1] + w
    totals = jax.device_get(totals)
    return {name: float(s) / max(float(w), 1e-12) for name, (s, w) in totals.items()}
