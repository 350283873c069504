"""Small named preprocessing ops (`dict -> dict`), composed from a string in the config.

    "to_float|pad_crop(1)"  ->  [to_float(), pad_crop(1)]

Every op has the signature `op(example: dict, rng: np.random.Generator) -> dict`, so
random and deterministic ops compose the same way; Grain seeds `rng` per element, which
keeps augmentation reproducible and resumable.
"""
from __future__ import annotations

import ast
import difflib
from typing import Any, Callable

import numpy as np

Op = Callable[[dict, np.random.Generator], dict]


def to_float(lo: float = 0.0, hi: float = 1.0, key: str = "image") -> Op:
    """uint8 [0, 255] -> float32 [lo, hi]."""
    def op(ex, rng):
        ex = dict(ex)
        ex[key] = np.asarray(ex[key], np.float32) * ((hi - lo) / 255.0) + lo
        return ex
    return op


def standardize(mean: float, std: float, key: str = "image") -> Op:
    """(x - mean) / std, after `to_float`."""
    def op(ex, rng):
        ex = dict(ex)
        ex[key] = ((ex[key] - np.float32(mean)) / np.float32(std)).astype(np.float32)
        return ex
    return op


def pad_crop(pad: int, key: str = "image") -> Op:
    """Zero-pad by `pad` pixels on each side, then crop back to size at a random offset."""
    def op(ex, rng):
        ex = dict(ex)
        img = ex[key]
        h, w = img.shape[:2]
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        ex[key] = padded[dy:dy + h, dx:dx + w]
        return ex
    return op


def flip_lr(key: str = "image") -> Op:
    """Mirror left-right with probability 1/2."""
    def op(ex, rng):
        ex = dict(ex)
        if rng.random() < 0.5:
            ex[key] = ex[key][:, ::-1]
        return ex
    return op


def rows_as_sequence(key: str = "image") -> Op:
    """(H, W, C) image -> (H, W*C) sequence: one row per time step (for RNNs)."""
    def op(ex, rng):
        ex = dict(ex)
        img = ex[key]
        ex[key] = img.reshape(img.shape[0], -1)
        return ex
    return op


def keep(*keys: str) -> Op:
    """Drops every feature not named (e.g. ids or strings the model cannot batch)."""
    def op(ex, rng):
        return {k: ex[k] for k in keys}
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
            raise ValueError(f"unknown preprocessing op {name!r} in {spec!r}.{hint} "
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

    def op(ex, rng):
        for f in ops:
            ex = f(ex, rng)
        return ex
    return op
