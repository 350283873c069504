"""Small named preprocessing ops, composed from one string in the config.

    "decode|random_resized_crop(224)|to_float|flip_lr"
      -> per-example: [decode(), random_resized_crop(224)]   batched: [to_float(), flip_lr()]

Two stages, each with its own table of names:
- per-example ops, `op(example: dict, rand: RowRandom) -> dict`, run on one example at a
  time before stacking (in Grain's reader threads): for data whose rows differ in shape
  until preprocessed (encoded images, random-resized crops, tokenised text);
- batched ops, `op(batch: dict, rand: RowRandom) -> dict`, run on the stacked batch, each
  feature an array with a leading row axis (R, ...): one vectorised numpy call per batch
  rather than a Python call per example.
A spec lists its per-example ops first. In both stages `rand` draws the random numbers of
each row from that row's position in the data stream (a one-row RowRandom for a
per-example op), so a row is augmented the same way whether it is processed alone, in a
batch of 128, on one process or on 64: augmentation stays reproducible and resumable.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
from typing import Any, Callable, Sequence

import numpy as np

from data.row_random import RowRandom

from data import image_ops, mix_ops, randaugment, text_ops
from errors import ConfigError, DataError, UnknownNameError

Op = Callable[[dict, RowRandom], dict]  # per-example or batched: (data, rand) -> data


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


EXAMPLE_STREAM = 1  # RowRandom stream of the per-example stage

# Name -> op factory, one table per stage; a name is in exactly one of them.
EXAMPLE_OPS: dict[str, Callable[..., Op]] = {
    **image_ops.EXAMPLE_OPS,              # decode, random_resized_crop, resize_small, central_crop
    "randaugment": randaugment.randaugment,
    **text_ops.EXAMPLE_OPS,               # tokenize
}
BATCH_OPS: dict[str, Callable[..., Op]] = {
    "to_float": to_float,
    "standardize": standardize,
    "pad_crop": pad_crop,
    "flip_lr": flip_lr,
    "rows_as_sequence": rows_as_sequence,
    "keep": keep,
    **image_ops.BATCH_OPS,                # normalize
    **mix_ops.BATCH_OPS,                  # mixup, cutmix
}
assert not EXAMPLE_OPS.keys() & BATCH_OPS.keys(), "an op name must belong to one stage"


@dataclasses.dataclass(frozen=True)
class Stages:
    """A spec's ops in order, split by stage."""
    example: tuple[Op, ...]  # per example, before stacking
    batch: tuple[Op, ...]    # on the stacked batch


def _unknown(name: str, spec: str) -> UnknownNameError:
    known = list(EXAMPLE_OPS) + list(BATCH_OPS)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(
        f"unknown preprocessing op {name!r} in {spec!r}.{hint} Valid per-example: "
        f"{', '.join(sorted(EXAMPLE_OPS)) or '(none)'}; batched: {', '.join(sorted(BATCH_OPS))}.")


def parse(spec: str) -> Stages:
    """Parses "name(arg, ...)|name|..." into its per-example and batched ops; unknown
    names list the valid ones, and a per-example op after a batched one is refused."""
    example: list[Op] = []
    batch: list[Op] = []
    first_batched = ""
    for part in filter(None, (p.strip() for p in spec.split("|"))):
        name, _, rest = part.partition("(")
        name = name.strip()
        if name in EXAMPLE_OPS:
            if first_batched:
                raise ConfigError(
                    f"per-example op {name!r} comes after the batched op {first_batched!r} in "
                    f"{spec!r}; per-example ops run before stacking, so list them first.")
            table, out = EXAMPLE_OPS, example
        elif name in BATCH_OPS:
            first_batched = first_batched or name
            table, out = BATCH_OPS, batch
        else:
            raise _unknown(name, spec)
        args: Any = ()
        kwargs: dict = {}
        if rest:
            call = ast.parse(f"f({rest}", mode="eval").body
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        out.append(table[name](*args, **kwargs))
    return Stages(tuple(example), tuple(batch))


def chain(ops: Sequence[Op]) -> Op:
    """One op that applies `ops` in order (the identity for none)."""
    def op(data, rand):
        for f in ops:
            data = f(data, rand)
        return data
    return op


def map_examples(op: Op, examples: Sequence[dict], seed: int, positions: Sequence[int]) -> list[dict]:
    """The per-example stage: `op` on each example with a one-row RowRandom of its position."""
    rand = RowRandom(seed, positions, stream=EXAMPLE_STREAM)  # (R,) keys, hashed at once
    return [op(ex, rand.row(i)) for i, ex in enumerate(examples)]


def stack(examples: Sequence[dict]) -> dict:
    """Examples (dicts of equally shaped arrays) -> one batch dict of (R, ...) arrays."""
    try:
        return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}
    except ValueError:  # only on failure: say which feature and how to fix it
        for k in examples[0]:
            shapes = sorted({np.shape(ex[k]) for ex in examples})
            if len(shapes) > 1:
                raise DataError(
                    f"feature {k!r} has rows of different shapes {shapes[:3]} and cannot be "
                    f"batched; add a per-example op that makes them equal (e.g. a crop or "
                    f"resize) at the start of the preprocess spec.") from None
        raise


def apply(spec: str, examples: Sequence[dict], seed: int = 0, first_position: int = 0) -> dict:
    """The batch of `examples` after both stages of `spec`, rows at consecutive positions."""
    stages = parse(spec)
    positions = np.arange(first_position, first_position + len(examples))
    if stages.example:
        examples = map_examples(chain(stages.example), examples, seed, positions)
    return chain(stages.batch)(stack(examples), RowRandom(seed, positions))
