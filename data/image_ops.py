"""Image ops for real-scale image data (ImageNet, CIFAR as encoded files): decoding, crops,
resizing and normalisation.

The per-example ops (`decode`, `random_resized_crop`, `resize_small`, `central_crop`) take
one example whose image is encoded bytes or a (H, W, C) uint8 array of any size, and use
Pillow for decoding and resampling (its bilinear filter widens its support when it shrinks,
i.e. it antialiases, as torchvision's and big_vision's resizes do). `normalize` is batched:
one vectorised call on the stacked (R, H, W, C) batch once the crops have made the shapes
equal. Randomness comes from the row's RowRandom (data/ops.py), a fixed number of draws
per call, so crops are keyed by stream position like every other op.

Each per-example image op is built by `image_op` from a function of the image alone, which
takes and returns a Pillow image or an array. Called on its own, the op returns an array;
`fuse` (used by data/ops.py's `chain`) runs consecutive image ops of a spec on one Pillow
image and converts it to an array once, at the end: the same pixels (the conversions are
lossless) without two copies per op.
"""
from __future__ import annotations

import io
import math
from typing import Any, Callable, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.row_random import RowRandom
from errors import ConfigError, DataError


Op = Callable[[dict, RowRandom], dict]
Picture = Union[Image.Image, np.ndarray]  # an image between image ops: Pillow or (H, W, C)
ImageFn = Callable[[Any, RowRandom], Any]  # image (or encoded bytes) -> Picture

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, of images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_ATTEMPTS = 10  # Inception-style crop: tries before the central fallback


def _size(img: Picture) -> tuple[int, int]:
    """(height, width) of a Pillow image or an (H, W, ...) array."""
    return (img.height, img.width) if isinstance(img, Image.Image) else img.shape[:2]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """`size` or `(height, width)` -> (height, width)."""
    h, w = (size, size) if isinstance(size, int) else size
    return int(h), int(w)


def to_pil(img: np.ndarray) -> Image.Image:
    """(H, W, 1) or (H, W, 3) uint8 -> a Pillow image ("L" or "RGB")."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise DataError(f"image ops need (H, W, 1|3) uint8 images, got {img.dtype} {img.shape}; "
                        f"put them before to_float/normalize in the preprocess spec.")
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def from_pil(img: Image.Image) -> np.ndarray:
    """A Pillow image -> (H, W, C) uint8 (C = 1 for "L")."""
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def as_pil(img: Picture) -> Image.Image:
    """A Pillow image as it is, an (H, W, 1|3) uint8 array as a Pillow image."""
    return img if isinstance(img, Image.Image) else to_pil(img)


def as_array(img: Picture) -> np.ndarray:
    """An array as it is, a Pillow image as an (H, W, C) uint8 array."""
    return from_pil(img) if isinstance(img, Image.Image) else img


def mirror(img: np.ndarray) -> np.ndarray:
    """(H, W, ...) -> its left-right mirror image (a new array)."""
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] in (1, 3):
        return from_pil(to_pil(img).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return img[:, ::-1]


def image_op(fn: ImageFn, key: str) -> Op:
    """The per-example op that applies `fn` to `example[key]` and stores an array; `fuse`
    reads `fn` and `key` back to chain it with its neighbours on one Pillow image."""
    def op(example, rand):
        return {**example, key: as_array(fn(example[key], rand))}
    op.image_fn, op.image_key = fn, key
    return op


def fuse(ops: Sequence[Op]) -> list[Op]:
    """`ops` with each run of consecutive image ops on the same feature replaced by one
    image op: the run's functions pass the Pillow image along, one array conversion at the
    end. Draws happen in the same order, so the output is identical."""
    out: list[Op] = []
    for op in ops:
        key = getattr(op, "image_key", None)
        if key is not None and out and getattr(out[-1], "image_key", None) == key:
            first, then = out[-1].image_fn, op.image_fn
            out[-1] = image_op(lambda img, rand, first=first, then=then: then(first(img, rand), rand), key)
        else:
            out.append(op)
    return out


def decode(channels: int = 3, key: str = "image") -> Op:
    """Encoded JPEG/PNG/... bytes -> (H, W, channels) uint8.

    A source opened through data/sources.py leaves `key` encoded when the spec has this op
    (TFDS SkipDecoding). An already decoded uint8 (H, W, C) array passes through, so one
    spec serves sources opened either way.
    """
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise ConfigError(f"decode(channels={channels!r}): channels must be 1 or 3.")

    def fn(data, rand):
        if isinstance(data, Image.Image) or (
                isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3):
            return data
        if isinstance(data, np.ndarray):  # a 0-d object array holding the bytes
            data = data.item()
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, TypeError, OSError) as e:
            raise DataError(f"feature {key!r} is not an encoded image ({type(e).__name__}: {e}); "
                            f"drop `decode` from the preprocess spec if it is already an array.") from None
        return img if img.mode == modes[channels] else img.convert(modes[channels])
    op = image_op(fn, key)
    op.decodes = key  # read by data/sources.py: open this feature undecoded
    return op


def inception_crop_box(height: int, width: int, u: np.ndarray, scale: Sequence[float],
                       ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of an Inception-style random crop.

    `u`: (CROP_ATTEMPTS, 4) uniforms in [0, 1) (area, log aspect, top, left per attempt).
    Takes the first attempt whose box fits, else the central crop of the allowed aspect
    closest to the image's, as torchvision's RandomResizedCrop does.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for a, r, y, x in u:
        target = area * (scale[0] + a * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + r * (log_hi - log_lo))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(y * (height - h + 1)), int(x * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), key: str = "image") -> Op:
    """Inception-style crop: a random box of `scale` x the area and an aspect in `ratio`
    (log-uniform), resized (bilinear) to `size`; (H, W, C) -> (size, size, C)."""
    out_h, out_w = _pair(size)

    def fn(img, rand):
        img = as_pil(img)                                          # (H, W, C) uint8
        u = rand.uniform(CROP_ATTEMPTS, 4)[0]                      # (10, 4)
        top, left, h, w = inception_crop_box(img.height, img.width, u, scale, ratio)
        return img.resize((out_w, out_h), Image.BILINEAR, box=(left, top, left + w, top + h))
    return image_op(fn, key)                                       # (out_h, out_w, C)


def resize_small(size: int, key: str = "image") -> Op:
    """Resizes (bilinear) so that the shorter side is `size`, keeping the aspect ratio."""
    def fn(img, rand):
        h, w = _size(img)
        factor = size / min(h, w)
        new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        if (new_h, new_w) == (h, w):
            return img
        return as_pil(img).resize((new_w, new_h), Image.BILINEAR)
    return image_op(fn, key)


def central_crop(size: int | Sequence[int], key: str = "image") -> Op:
    """The central (size, size) window of an image at least that large."""
    out_h, out_w = _pair(size)

    def fn(img, rand):
        h, w = _size(img)
        if h < out_h or w < out_w:
            raise DataError(f"central_crop({out_h}, {out_w}) got a {h}x{w} image; resize it "
                            f"first, e.g. resize_small({max(out_h, out_w)})|central_crop(...).")
        top, left = (h - out_h) // 2, (w - out_w) // 2
        if isinstance(img, Image.Image):
            return img.crop((left, top, left + out_w, top + out_h))
        return img[top:top + out_h, left:left + out_w]             # any array: a view
    return image_op(fn, key)


def normalize(mean: float | Sequence[float] = IMAGENET_MEAN, std: float | Sequence[float] = IMAGENET_STD,
              key: str = "image") -> Op:
    """Batched: uint8 [0, 255] -> float32 (x / 255 - mean) / std, per channel (ImageNet's
    statistics by default)."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)               # (C,) or ()
    offset = (-mean / std).astype(np.float32)

    def op(batch, rand):
        img = batch[key]                                           # (R, H, W, C)
        if scale.ndim and img.shape[-1] != scale.shape[0]:
            raise ConfigError(f"normalize has {scale.shape[0]} channel statistics but {key!r} "
                              f"has {img.shape[-1]} channels; pass mean=..., std=... to match.")
        # Rows of W*C values with the statistics tiled along them: numpy's inner loop then
        # runs over W*C, not over C = 3 (9x faster on a (32, 224, 224, 3) batch).
        rows, h, w = img.shape[:3]
        out = np.array(img, np.float32).reshape(rows, h, -1)        # (R, H, W*C), a copy
        out *= np.tile(scale, w) if scale.ndim else scale
        out += np.tile(offset, w) if offset.ndim else offset
        return {**batch, key: out.reshape(img.shape)}
    return op


EXAMPLE_OPS: dict[str, Callable[..., Op]] = {
    "decode": decode,
    "random_resized_crop": random_resized_crop,
    "resize_small": resize_small,
    "central_crop": central_crop,
}
BATCH_OPS: dict[str, Callable[..., Op]] = {
    "normalize": normalize,
}
