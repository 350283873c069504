"""RandAugment (Cubuk et al. 2019, https://arxiv.org/abs/1909.13719) as a per-example op,
composed from Pillow's ImageOps / ImageEnhance / affine transforms.

The op list, the magnitude scales and the grey fill (128) follow big_vision's
`distort_image_with_randaugment` (pp/autoaugment.py, from the TF TPU EfficientNet code):
each of `num_layers` layers picks one of the 16 ops uniformly and applies it at
`magnitude` (out of 10), signed ops negated with probability 1/2. Two deliberate
differences: translation and cutout sizes are relative to the image (big_vision's 100 and
40 pixels are those of a 224-pixel image), so the op also suits 32-pixel CIFAR images; and
Contrast is Pillow's (big_vision's TF version computes its mean from a mis-scaled
histogram).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from data.image_ops import as_pil, image_op
from data.row_random import RowRandom


Op = Callable[[dict, RowRandom], dict]
FILL = 128          # grey, for pixels that geometric ops and cutout leave uncovered
REFERENCE = 224.0   # image side that big_vision's pixel constants were set for
DRAWS = 4           # uniforms per layer: op, sign, cutout centre (y, x)


def _fill(img: Image.Image):
    return FILL if img.mode == "L" else (FILL,) * 3


def _affine(img: Image.Image, matrix: tuple) -> Image.Image:
    """Output pixel (x, y) takes input pixel (a x + b y + c, d x + e y + f)."""
    return img.transform(img.size, Image.AFFINE, matrix, resample=Image.NEAREST, fillcolor=_fill(img))


def _solarize_add(img: Image.Image, addition: int) -> Image.Image:
    """Adds `addition` to pixels below 128 (clipped to 255)."""
    lut = [min(255, i + addition) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _cutout(img: Image.Image, pad: int, cy: float, cx: float) -> Image.Image:
    """Grey square of side 2 * pad centred at (cy, cx) (fractions of height and width),
    clipped to the image."""
    if pad <= 0:
        return img
    y, x = int(cy * img.height), int(cx * img.width)
    out = img.copy()
    out.paste(_fill(img), (max(0, x - pad), max(0, y - pad), min(img.width, x + pad), min(img.height, y + pad)))
    return out


def _enhance(enhancer) -> Callable:
    # big_vision's factor: 0.1 (level 0) .. 1.9 (level 10), 1.0 = unchanged.
    return lambda img, m, sign, u: enhancer(img).enhance(m * 1.8 + 0.1)


# name -> (image, m = magnitude / 10, sign in {-1, 1}, u (2,) uniforms) -> image
AUGMENTS: dict[str, Callable[[Image.Image, float, float, np.ndarray], Image.Image]] = {
    "AutoContrast": lambda img, m, sign, u: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, sign, u: ImageOps.equalize(img),
    "Invert": lambda img, m, sign, u: ImageOps.invert(img),
    "Rotate": lambda img, m, sign, u: img.rotate(sign * m * 30.0, resample=Image.NEAREST, fillcolor=_fill(img)),
    "Posterize": lambda img, m, sign, u: ImageOps.posterize(img, int(m * 4)),     # bits kept
    "Solarize": lambda img, m, sign, u: ImageOps.solarize(img, int(m * 256)),     # threshold
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda img, m, sign, u: _affine(img, (1, sign * m * 0.3, 0, 0, 1, 0)),
    "ShearY": lambda img, m, sign, u: _affine(img, (1, 0, 0, sign * m * 0.3, 1, 0)),
    "TranslateX": lambda img, m, sign, u: _affine(img, (1, 0, sign * m * 100 / REFERENCE * img.width, 0, 1, 0)),
    "TranslateY": lambda img, m, sign, u: _affine(img, (1, 0, 0, 0, 1, sign * m * 100 / REFERENCE * img.height)),
    "Cutout": lambda img, m, sign, u: _cutout(img, int(m * 40 / REFERENCE * min(img.size)), u[0], u[1]),
    "SolarizeAdd": lambda img, m, sign, u: _solarize_add(img, int(m * 110)),
}
NAMES = list(AUGMENTS)


def randaugment(num_layers: int = 2, magnitude: float = 10, key: str = "image") -> Op:
    """RandAugment on one (H, W, 1|3) uint8 image: `num_layers` ops drawn uniformly from
    AUGMENTS, each at `magnitude` in [0, 10]; same shape and dtype out."""
    m = float(magnitude) / 10.0

    def fn(img, rand):
        u = rand.uniform(num_layers, DRAWS)[0]                     # (layers, 4)
        img = as_pil(img)
        for choice, sign, cy, cx in u:
            name = NAMES[min(int(choice * len(NAMES)), len(NAMES) - 1)]
            img = AUGMENTS[name](img, m, 1.0 if sign < 0.5 else -1.0, np.array([cy, cx]))
        return img
    return image_op(fn, key)
