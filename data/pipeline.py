"""The Grain pipeline: seeded, sharded by process, checkpointable.

Training:  a stream of positions 0, 1, 2, ... over the examples in a fresh seeded
           permutation each epoch; local batch k holds positions k*b ... (k+1)*b - 1
           (b = B / processes); process p takes local batches p, p+P, ...; each example of
           a batch is read and put through the per-example ops (if any), the rows are
           stacked, then the batched ops run with one vectorised call each; random numbers
           are keyed by position in both stages (data/ops.py). Grain maps batch indices to
           batches, builds them ahead on its reader threads and checkpoints the iterator
           (its next batch index).
Evaluation: every example once, in order, the last batch padded and masked, the same
           number of batches on every process (collectives stay in step).

A small split can be held in memory (`in_memory=True`): as arrays, batches are gathered
with one fancy index instead of a read per example; with per-example ops, as a list of
examples (their shapes may differ). The stream is the same either way.
"""
from __future__ import annotations

import functools
import math
import sys
from typing import Iterator, Sequence

import grain
import numpy as np

from data import ops as ops_lib
from errors import ConfigError, DataError


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """The rows each process feeds; the global batch must split evenly over processes."""
    if global_batch_size % process_count:
        raise ConfigError(f"batch size {global_batch_size} is not divisible by the "
                         f"{process_count} processes; choose a multiple of {process_count}.")
    return global_batch_size // process_count


class ShuffledOrder:
    """Stream position -> example index: epoch e visits every example once, in the
    permutation drawn from (seed, e)."""

    def __init__(self, num_examples: int, seed: int):
        self.num_examples, self.seed = num_examples, seed
        self.permutation = functools.lru_cache(maxsize=4)(self._permutation)  # per instance

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """(R,) positions -> (R,) example indices."""
        epochs, offsets = np.divmod(positions, self.num_examples)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            out[here] = self.permutation(int(epoch))[offsets[here]]
        return out


def load_arrays(source: Sequence[dict]) -> dict[str, np.ndarray]:
    """The whole source as arrays with a leading example axis (for small splits)."""
    arrays = getattr(source, "arrays", None)  # data/array_cache.py's ArraySplit or a Subset of one
    if arrays is not None:
        return dict(arrays)
    return ops_lib.stack([source[i] for i in range(len(source))])


def train_dataset(source: Sequence[dict], *, global_batch_size: int, preprocess: str,
                  seed: int, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, prefetch: int = 4, in_memory: bool = False) -> grain.IterDataset:
    """An endless, shuffled stream of local batches; its iterator has get/set_state.

    The global stream (positions -> permuted examples -> batches of B/P rows -> ops) is the
    same for any number of processes P and with or without `in_memory`; process p takes
    local batches p, p+P, p+2P, ..., so global batch b is the same examples, augmented the
    same way, on 1 process or on 64.
    """
    batch = local_batch_size(global_batch_size, process_count)
    if len(source) < global_batch_size:
        raise DataError(f"the training split has {len(source)} examples, fewer than one "
                         f"batch of {global_batch_size}; lower train.batch_size.")
    order = ShuffledOrder(len(source), seed)
    stages = ops_lib.parse(preprocess)
    batch_op = ops_lib.chain(stages.batch)
    example_op = ops_lib.chain(stages.example) if stages.example else None
    arrays = load_arrays(source) if in_memory and example_op is None else None
    # Per-example ops may be fed rows of differing shapes, so those are kept unstacked.
    examples = [source[i] for i in range(len(source))] if in_memory and example_op else source

    def local_batch(k: int) -> dict:
        positions = np.arange(k * batch, (k + 1) * batch, dtype=np.int64)  # (b,)
        indices = order(positions)
        if example_op is not None:  # runs in Grain's reader thread, like the rest
            rows = ops_lib.stack(ops_lib.map_examples(
                example_op, [examples[int(i)] for i in indices], seed + 1, positions))
        elif arrays is not None:
            rows = {key: value[indices] for key, value in arrays.items()}
        else:
            rows = ops_lib.stack([source[int(i)] for i in indices])
        return batch_op(rows, ops_lib.RowRandom(seed + 1, positions))

    ds = grain.MapDataset.range(sys.maxsize // (2 * batch))[process_index::process_count].map(local_batch)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return math.ceil(num_examples / global_batch_size)


def eval_batches(source: Sequence[dict], *, global_batch_size: int, preprocess: str,
                 process_index: int = 0, process_count: int = 1,
                 max_batches: int | None = None, num_threads: int = 2) -> Iterator[dict]:
    """Each example exactly once; padded rows carry `mask == 0`.

    Row r of process p in batch b is global example b*B + p*(B/P) + r, so every process
    yields the same number of batches and the union is the whole split in order. With
    per-example ops (decoding, resizing) the batches are built ahead on `num_threads`
    Grain reader threads, in order.
    """
    batch = local_batch_size(global_batch_size, process_count)
    stages = ops_lib.parse(preprocess)
    batch_op = ops_lib.chain(stages.batch)
    example_op = ops_lib.chain(stages.example) if stages.example else None
    n = len(source)
    num_batches = num_eval_batches(n, global_batch_size)
    if max_batches:
        num_batches = min(num_batches, max_batches)

    def read(indices: list[int]) -> list[dict]:
        # Eval ops should be deterministic; keyed randomness makes sure of it anyway.
        examples = [source[g] for g in indices]
        return ops_lib.map_examples(example_op, examples, 0, indices) if example_op else examples

    def eval_batch(b: int) -> dict:
        first = b * global_batch_size + process_index * batch  # global index of row 0
        real = [g for g in range(first, first + batch) if g < n]
        examples = read(real)
        # Padding rows are zeros shaped like a real example after the per-example ops
        # (example 0 when a process's rows are all padding), masked out.
        template = examples[0] if examples else read([0])[0]
        padding = {k: np.zeros_like(np.asarray(v)) for k, v in template.items()}
        rows = ops_lib.stack(examples + [padding] * (batch - len(real)))
        out = batch_op(rows, ops_lib.RowRandom(0, np.arange(first, first + batch)))
        out["mask"] = (np.arange(first, first + batch) < n).astype(np.float32)
        return out

    if example_op is None:
        return map(eval_batch, range(num_batches))
    ds = grain.MapDataset.range(num_batches).map(eval_batch)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads)))
