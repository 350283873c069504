"""Small named preprocessing ops over batches, composed from a string in the config.

    "to_float|pad_crop(1)"  ->  [to_float(), pad_crop(1)]

Every op has the signature `op(batch: dict, rand: RowRandom) -> dict`: `batch` maps each
feature to an array with a leading row axis (R, ...), and `rand` draws the random numbers
of each row from that row's position in the data stream. So an op is one vectorised numpy
call per batch rather than a Python call per example, and a row is augmented the same way
whether it is processed alone, in a batch of 128, on one process or on 64: augmentation
stays reproducible and resumable.
"""
from __future__ import annotations

import ast
import difflib
from typing import Any, Callable, Sequence

import numpy as np

from errors import UnknownNameError

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

    def __init__(self, seed: int, positions: Sequence[int] | np.ndarray):
        positions = np.asarray(positions, np.int64).astype(np.uint64)  # (R,)
        seed_key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], np.uint64) + _GOLDEN)
        self._keys = _mix(seed_key ^ (positions * _GOLDEN))  # (R,)
        self._drawn = 0

    def __len__(self) -> int:
        return len(self._keys)

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


Op = Callable[[dict, RowRandom], dict]


def to_float(lo: float = 0.0, hi: float = 1.0, key: str = "image") -> Op:
    """uint8 [0, 255] -> float32 [lo, hi]."""
    scale, offset = np.float32((hi - lo) / 255.0), np.float32(lo)

    def op(batch, rand):
        return {**batch, key: np.asarray(batch[key], np.float32) * scale + offset}
    return op


def standardize(mean: float, std: float, key: str = "image") -> Op:
    """(x - mean) / std, after `to_float`."""
    def op(batch, rand):
        return {**batch, key: ((batch[key] - np.float32(mean)) / np.float32(std)).astype(np.float32)}
    return op


def pad_crop(pad: int, key: str = "image") -> Op:
    """Zero-pad by `pad` pixels on each side, then crop back to size at a random offset."""
    def op(batch, rand):
        img = batch[key]                                                 # (R, H, W, C)
        rows, h, w = img.shape[:3]
        padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (R, H+2p, W+2p, C)
        offsets = rand.integers(0, 2 * pad + 1, 2)                       # (R, 2): dy, dx
        ys = offsets[:, 0, None] + np.arange(h)                          # (R, H)
        xs = offsets[:, 1, None] + np.arange(w)                          # (R, W)
        crop = padded[np.arange(rows)[:, None, None], ys[:, :, None], xs[:, None, :]]
        return {**batch, key: crop}
    return op


def flip_lr(key: str = "image") -> Op:
    """Mirror left-right with probability 1/2."""
    def op(batch, rand):
        img = batch[key]                                                 # (R, H, W, ...)
        flip = (rand.uniform(1)[:, 0] < 0.5).reshape(-1, *([1] * (img.ndim - 1)))
        return {**batch, key: np.where(flip, img[:, :, ::-1], img)}
    return op


def rows_as_sequence(key: str = "image") -> Op:
    """(H, W, C) image -> (H, W*C) sequence: one row per time step (for RNNs)."""
    def op(batch, rand):
        img = batch[key]
        return {**batch, key: img.reshape(img.shape[0], img.shape[1], -1)}
    return op


def keep(*keys: str) -> Op:
    """Drops every feature not named (e.g. ids or strings the model cannot batch)."""
    def op(batch, rand):
        return {k: batch[k] for k in keys}
    return op


OPS: dict[str, Callable[..., Op]] = {
    "to_float": to_float,
    "standardize": standardize,
    "pad_crop": pad_crop,
    "flip_lr": flip_lr,
    "rows_as_sequence": rows_as_sequence,
    "keep": keep,
}


def parse(spec: str) -> list[Op]:
    """Parses "name(arg, ...)|name|..." into ops; unknown names list the valid ones."""
    ops = []
    for part in filter(None, (p.strip() for p in spec.split("|"))):
        name, _, rest = part.partition("(")
        name = name.strip()
        if name not in OPS:
            close = difflib.get_close_matches(name, list(OPS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"unknown preprocessing op {name!r} in {spec!r}.{hint} "
                             f"Valid: {', '.join(sorted(OPS))}.")
        args: Any = ()
        kwargs: dict = {}
        if rest:
            call = ast.parse(f"f({rest}", mode="eval").body
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        ops.append(OPS[name](*args, **kwargs))
    return ops


def compose(spec: str) -> Op:
    """One op that applies every op in `spec` in order."""
    ops = parse(spec)

    def op(batch, rand):
        for f in ops:
            batch = f(batch, rand)
        return batch
    return op


def stack(examples: Sequence[dict]) -> dict:
    """Examples (dicts of equally shaped arrays) -> one batch dict of (R, ...) arrays."""
    return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}


def apply(spec: str, examples: Sequence[dict], seed: int = 0, first_position: int = 0) -> dict:
    """The batch of `examples` after the ops of `spec`, rows at consecutive positions."""
    positions = np.arange(first_position, first_position + len(examples))
    return compose(spec)(stack(examples), RowRandom(seed, positions))
