"""Batched mixing ops: mixup (Zhang et al. 2017) and CutMix (Yun et al. 2019).

Both replace the integer `label` (R,) by soft labels, a (R, num_classes) float32 array
whose rows sum to 1; train/tasks/classification.py takes such labels as targets (and
their argmax for accuracy). Applied after another mixing op, they mix its soft labels.

Row r is mixed with its neighbour r ^ 1 (rows 2j and 2j + 1 form a pair): with an even
local batch, which starts at an even stream position, a pair is the same two examples
on any process count, and each row's mixing weight is drawn from its own position, so a
row is mixed the same way however the global batch is split. A last row without a
neighbour (odd batch) is mixed with itself, i.e. left as it is.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from data.row_random import RowRandom
from errors import ConfigError, DataError


Op = Callable[[dict, RowRandom], dict]


def _partners(rows: int) -> np.ndarray:
    """(R,) index of each row's pair partner: r ^ 1, or r itself for an unpaired last row."""
    partner = np.arange(rows) ^ 1
    return np.where(partner < rows, partner, np.arange(rows))


def _beta(alpha: float, u: np.ndarray) -> np.ndarray:
    """Beta(alpha, alpha) samples from uniforms `u` (inverse CDF: exact, one draw per row)."""
    from scipy import special  # scikit-learn's dependency; imported here, as it takes 0.4 s
    return special.betaincinv(alpha, alpha, u)


def soft_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(R,) class ids -> (R, C) one-hot float32; (R, C) soft labels pass through."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(np.float32)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}) for mixing, got "
                        f"{labels.min()}..{labels.max()}; set num_classes of mixup/cutmix.")
    onehot = np.zeros((len(labels), num_classes), np.float32)
    onehot[np.arange(len(labels)), labels] = 1.0
    return onehot


def _check(alpha: float, num_classes: int, name: str) -> None:
    if alpha <= 0 or num_classes < 2:
        raise ConfigError(f"{name}(alpha={alpha}, num_classes={num_classes}): alpha must be > 0 "
                          f"and num_classes >= 2, e.g. {name}(0.2, 1000).")


def mixup(alpha: float, num_classes: int, key: str = "image", label: str = "label") -> Op:
    """x_r <- lam_r x_r + (1 - lam_r) x_partner, same for one-hot labels; lam_r ~ Beta(alpha, alpha)."""
    _check(alpha, num_classes, "mixup")

    def op(batch, rand):
        x = np.asarray(batch[key], np.float32)                     # (R, ...)
        partner = _partners(len(x))
        lam = _beta(alpha, rand.uniform(1)[:, 0]).astype(np.float32)  # (R,)
        y = soft_labels(batch[label], num_classes)                 # (R, C)
        # x + (1 - lam) (x_partner - x), in place on the gathered copy: one temporary.
        mixed = x[partner]
        mixed -= x
        mixed *= (1 - lam).reshape(-1, *([1] * (x.ndim - 1)))
        mixed += x
        return {**batch, key: mixed, label: lam[:, None] * y + (1 - lam[:, None]) * y[partner]}
    return op


def cutmix(alpha: float, num_classes: int, key: str = "image", label: str = "label") -> Op:
    """Pastes a box of the partner's image, of area fraction ~ 1 - Beta(alpha, alpha) at a
    uniform centre (clipped to the image); labels weighted by the pixels each image keeps."""
    _check(alpha, num_classes, "cutmix")

    def op(batch, rand):
        x = np.asarray(batch[key])                                 # (R, H, W, ...)
        rows, h, w = x.shape[:3]
        partner = _partners(rows)
        u = rand.uniform(3)                                        # (R, 3): lam, centre y, x
        cut = np.sqrt(1.0 - _beta(alpha, u[:, 0]))                 # (R,) box side / image side
        cy, cx = u[:, 1] * h, u[:, 2] * w
        y0 = np.clip(np.round(cy - cut * h / 2), 0, h).astype(int)
        y1 = np.clip(np.round(cy + cut * h / 2), 0, h).astype(int)
        x0 = np.clip(np.round(cx - cut * w / 2), 0, w).astype(int)
        x1 = np.clip(np.round(cx + cut * w / 2), 0, w).astype(int)
        ys, xs = np.arange(h), np.arange(w)
        inside = (((ys >= y0[:, None]) & (ys < y1[:, None]))[:, :, None]
                  & ((xs >= x0[:, None]) & (xs < x1[:, None]))[:, None, :])  # (R, H, W)
        mask = inside.reshape(rows, h, w, *([1] * (x.ndim - 3)))
        kept = (1.0 - (y1 - y0) * (x1 - x0) / (h * w)).astype(np.float32)   # (R,)
        y = soft_labels(batch[label], num_classes)                 # (R, C)
        return {**batch, key: np.where(mask, x[partner], x),
                label: kept[:, None] * y + (1 - kept[:, None]) * y[partner]}
    return op


BATCH_OPS: dict[str, Callable[..., Op]] = {
    "mixup": mixup,
    "cutmix": cutmix,
}
