"""Figures shared by the `attack` and `explain` verbs: input arrays to displayable images,
and a titled grid of them (matplotlib, Agg: no display needed)."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from train import files


@dataclasses.dataclass
class Cell:
    """One panel: a (H, W) or (H, W, 3) array, its title and how to colour it."""
    image: np.ndarray
    title: str = ""
    cmap: str = "gray"
    vmin: float | None = None
    vmax: float | None = None
    color: str = "black"   # of the title (e.g. red for a wrong prediction)


def displayable(x: np.ndarray) -> np.ndarray:
    """One example (H, W, 1) / (H, W, 3) / (T, F) / (D,) -> a 2-D (or RGB) array."""
    x = np.asarray(x, np.float32)
    if x.ndim == 3 and x.shape[-1] in (1, 3):
        return x[..., 0] if x.shape[-1] == 1 else x
    if x.ndim == 2:
        return x
    return x.reshape(1, -1)


def to_unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values in [low, high] -> [0, 1] (RGB panels are drawn without vmin/vmax)."""
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def image_grid(rows: list[list[Cell]], path: str, panel_inches: float = 1.6) -> None:
    """Writes the panels as a PNG grid, one list of cells per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_inches * n_cols, panel_inches * n_rows + 0.3),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                cell = row[c]
                ax.imshow(cell.image, cmap=cell.cmap, vmin=cell.vmin, vmax=cell.vmax,
                          interpolation="nearest")
                ax.set_title(cell.title, fontsize=8, color=cell.color)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)


def save_png(fig, path: str, **kwargs) -> None:
    """`fig.savefig(path)` as PNG, where `path` may be a gs:// URL (train/files.py)."""
    files.makedirs(os.path.dirname(files.absolute(path)))
    with files.open_write(path, text=False) as f:
        fig.savefig(f, format="png", **kwargs)


def to_host(x) -> np.ndarray:
    """A global jax.Array as one numpy array on every process."""
    import jax
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
