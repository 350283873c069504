"""Counter-based random numbers for rows of the data stream, keyed by stream position:
the randomness of every preprocessing op (data/ops.py and the ops it registers)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 values (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class RowRandom:
    """Counter-based random numbers for rows: draw d of the row at stream position p is
    a hash of (seed, p, d), so it does not depend on which other rows share the batch.

    Every op draws the same amount for every row, so the d-th draw of a row is always the
    same number.
    """

    def __init__(self, seed: int, positions: Sequence[int] | np.ndarray, stream: int = 0):
        """`stream` picks an independent family of numbers for the same (seed, positions):
        the per-example stage uses EXAMPLE_STREAM so its draws never repeat the batched
        stage's (stream 0, the numbers of every run made before there were two stages)."""
        positions = np.asarray(positions, np.int64).astype(np.uint64)  # (R,)
        seed_key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], np.uint64) + _GOLDEN)
        if stream:
            seed_key = _mix(seed_key ^ _mix(np.asarray([stream], np.uint64)))
        self._keys = _mix(seed_key ^ (positions * _GOLDEN))  # (R,)
        self._drawn = 0

    def __len__(self) -> int:
        return len(self._keys)

    def row(self, i: int) -> "RowRandom":
        """Row i alone, with no draws made yet: the numbers of
        RowRandom(seed, [positions[i]], stream), without hashing the key again (the
        per-example stage makes one per example, so its ~50 us matter)."""
        one = object.__new__(RowRandom)
        one._keys, one._drawn = self._keys[i:i + 1], 0
        return one

    def uniform(self, *shape: int) -> np.ndarray:
        """(R, *shape) float64 in [0, 1)."""
        n = int(np.prod(shape, dtype=np.int64))
        counters = np.arange(self._drawn + 1, self._drawn + n + 1, dtype=np.uint64)  # (n,)
        self._drawn += n
        bits = _mix(self._keys[:, None] + counters[None, :] * _GOLDEN)  # (R, n)
        return ((bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(len(self), *shape)

    def integers(self, low: int, high: int, *shape: int) -> np.ndarray:
        """(R, *shape) int64 uniform in [low, high)."""
        return np.minimum(low + np.floor(self.uniform(*shape) * (high - low)).astype(np.int64), high - 1)
