"""The Grain pipeline: seeded, sharded by process, checkpointable.

Training:  source -> shuffle(seed, per epoch) -> repeat -> preprocess ops (seeded per
           element) -> batch(B / processes) -> this process's batches -> prefetch threads
Evaluation: every example once, in order, the last batch padded and masked, the same
           number of batches on every process (collectives stay in step).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import grain
import numpy as np

from data import ops as ops_lib


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """The rows each process feeds; the global batch must split evenly over processes."""
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the "
                         f"{process_count} processes; choose a multiple of {process_count}.")
    return global_batch_size // process_count


def train_dataset(source: Sequence[dict], *, global_batch_size: int, preprocess: str,
                  seed: int, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, prefetch: int = 4) -> grain.IterDataset:
    """An endless, shuffled stream of local batches; its iterator has get/set_state.

    The global stream (shuffle -> repeat -> augment -> batches of B/P rows) is the same for
    any number of processes P; process p takes local batches p, p+P, p+2P, ..., so global
    batch b is the same examples, augmented the same way, on 1 process or on 64.
    """
    batch = local_batch_size(global_batch_size, process_count)
    if len(source) < global_batch_size:
        raise ValueError(f"the training split has {len(source)} examples, fewer than one "
                         f"batch of {global_batch_size}; lower train.batch_size.")
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    ds = ds.random_map(ops_lib.compose(preprocess), seed=seed + 1)
    ds = ds.batch(batch, drop_remainder=True)[process_index::process_count]
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return math.ceil(num_examples / global_batch_size)


def eval_batches(source: Sequence[dict], *, global_batch_size: int, preprocess: str,
                 process_index: int = 0, process_count: int = 1,
                 max_batches: int | None = None) -> Iterator[dict]:
    """Each example exactly once; padded rows carry `mask == 0`.

    Row r of process p in batch b is global example b*B + p*(B/P) + r, so every process
    yields the same number of batches and the union is the whole split in order.
    """
    batch = local_batch_size(global_batch_size, process_count)
    op = ops_lib.compose(preprocess)
    n = len(source)
    num_batches = num_eval_batches(n, global_batch_size)
    if max_batches:
        num_batches = min(num_batches, max_batches)
    rng = np.random.default_rng(0)  # eval ops should be deterministic; this makes sure
    template = None
    for b in range(num_batches):
        rows, mask = [], []
        for r in range(batch):
            g = b * global_batch_size + process_index * batch + r
            if g < n:
                ex = op(source[g], rng)
                template = template or ex
                rows.append(ex)
                mask.append(1.0)
            else:
                rows.append(None)
                mask.append(0.0)
        if template is None:  # this process's rows are all padding: borrow example 0
            template = op(source[0], rng)
        rows = [r if r is not None else {k: np.zeros_like(v) for k, v in template.items()}
                for r in rows]
        out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in template}
        out["mask"] = np.asarray(mask, np.float32)
        yield out
