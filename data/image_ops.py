"""Image ops for real-scale image data (ImageNet, CIFAR as encoded files): decoding, crops,
resizing and normalisation.

The per-example ops (`decode`, `random_resized_crop`, `resize_small`, `central_crop`) take
one example whose image is encoded bytes or a (H, W, C) uint8 array of any size, and use
Pillow for decoding and resampling (its bilinear filter widens its support when it shrinks,
i.e. it antialiases, as torchvision's and big_vision's resizes do). `normalize` is batched:
one vectorised call on the stacked (R, H, W, C) batch once the crops have made the shapes
equal. Randomness comes from the row's RowRandom (data/ops.py), a fixed number of draws
per call, so crops are keyed by stream position like every other op.
"""
from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.row_random import RowRandom
from errors import ConfigError, DataError


Op = Callable[[dict, RowRandom], dict]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, of images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_ATTEMPTS = 10  # Inception-style crop: tries before the central fallback


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


def decode(channels: int = 3, key: str = "image") -> Op:
    """Encoded JPEG/PNG/... bytes -> (H, W, channels) uint8.

    A source opened through data/sources.py leaves `key` encoded when the spec has this op
    (TFDS SkipDecoding). An already decoded uint8 (H, W, C) array passes through, so one
    spec serves sources opened either way.
    """
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise ConfigError(f"decode(channels={channels!r}): channels must be 1 or 3.")

    def op(example, rand):
        data = example[key]
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
            return example
        if isinstance(data, np.ndarray):  # a 0-d object array holding the bytes
            data = data.item()
        try:
            with Image.open(io.BytesIO(data)) as img:
                arr = from_pil(img.convert(modes[channels]))  # (H, W, channels)
        except (UnidentifiedImageError, TypeError, OSError) as e:
            raise DataError(f"feature {key!r} is not an encoded image ({type(e).__name__}: {e}); "
                            f"drop `decode` from the preprocess spec if it is already an array.") from None
        return {**example, key: arr}
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

    def op(example, rand):
        img = example[key]                                         # (H, W, C) uint8
        u = rand.uniform(CROP_ATTEMPTS, 4)[0]                      # (10, 4)
        top, left, h, w = inception_crop_box(img.shape[0], img.shape[1], u, scale, ratio)
        out = to_pil(img).resize((out_w, out_h), Image.BILINEAR, box=(left, top, left + w, top + h))
        return {**example, key: from_pil(out)}                     # (out_h, out_w, C)
    return op


def resize_small(size: int, key: str = "image") -> Op:
    """Resizes (bilinear) so that the shorter side is `size`, keeping the aspect ratio."""
    def op(example, rand):
        img = example[key]                                         # (H, W, C) uint8
        h, w = img.shape[:2]
        factor = size / min(h, w)
        new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        if (new_h, new_w) == (h, w):
            return example
        return {**example, key: from_pil(to_pil(img).resize((new_w, new_h), Image.BILINEAR))}
    return op


def central_crop(size: int | Sequence[int], key: str = "image") -> Op:
    """The central (size, size) window of an image at least that large."""
    out_h, out_w = _pair(size)

    def op(example, rand):
        img = example[key]                                         # (H, W, C)
        h, w = img.shape[:2]
        if h < out_h or w < out_w:
            raise DataError(f"central_crop({out_h}, {out_w}) got a {h}x{w} image; resize it "
                            f"first, e.g. resize_small({max(out_h, out_w)})|central_crop(...).")
        top, left = (h - out_h) // 2, (w - out_w) // 2
        return {**example, key: img[top:top + out_h, left:left + out_w]}
    return op


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
