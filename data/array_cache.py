"""Small decoded splits kept on disk as arrays next to the prepared data.

Reading a split through `tfds.data_source` decodes one record at a time in Python: ~0.25 ms
per example, 0.36 s of CPU for the 1,437 digits of `configs/digits_resnet.py`'s train
split at every start, more than the rest of opening the data. A split small enough to be
held in memory (`data.in_memory_max_mb`) whose features are all fixed-shape numeric arrays
is decoded once and stored as one .npz (a .npy per feature) under
<data_dir>/strata_arrays/; later opens read it (milliseconds) and serve the same values.

The key holds the dataset, its version, the split, and the size and modification time of
the prepared dataset's files, so re-preparing a dataset makes a new entry. The file is
written under a temporary name and renamed (data/cache_files.py), so a reader never sees
half an entry. Where the data dir cannot be written, the split is served from memory.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import numpy as np

from data import cache_files

CACHE_DIR = "strata_arrays"


class ArraySplit:
    """A split as stacked arrays: `split[i]` is a dict of row views, like the source's."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self._length = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> dict:
        return {key: value[i] for key, value in self.arrays.items()}

    def __getitems__(self, keys: Sequence[int]) -> list[dict]:
        return [self[int(k)] for k in keys]


def _identity(info: Any, name: str, split: str, extra: Any) -> str:
    """What the cached arrays depend on, hashed: dataset, version, split, prepared files."""
    files = []
    data_dir = str(getattr(info, "data_dir", "") or "")
    if data_dir and os.path.isdir(data_dir):
        for entry in sorted(os.scandir(data_dir), key=lambda e: e.name):
            if entry.is_file():
                stat = entry.stat()
                files.append((entry.name, stat.st_size, int(stat.st_mtime)))
    key = repr((name, str(info.version), split, extra, files))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def _stack(source: Sequence[dict]) -> dict[str, np.ndarray] | None:
    """Every example stacked per feature; None when a feature is not a fixed-shape numeric
    array (nested features, strings, ragged shapes), which then stay in the source."""
    rows = list(cache_files.read_records(source))
    if not rows or not all(isinstance(v, np.ndarray) or np.isscalar(v) for v in rows[0].values()):
        return None
    out = {}
    for key in rows[0]:
        try:
            array = np.stack([np.asarray(row[key]) for row in rows])
        except ValueError:  # ragged
            return None
        if array.dtype.kind not in "biuf":
            return None
        out[key] = array
    return out


def cached_split(source: Sequence[dict], info: Any, data_dir: str, name: str, split: str,
                 extra: Any = None) -> Sequence[dict]:
    """`source` as an ArraySplit read from (or first written to) the cache, or `source`
    itself when its features cannot be stacked. The caller decides that the split is small."""
    key = _identity(info, name, split, extra)
    path = os.path.join(data_dir, CACHE_DIR, f"{name.replace('/', '_').replace(':', '_')}-"
                        f"{split.replace('/', '_')}-{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if arrays:
            return ArraySplit(arrays)
    arrays = _stack(source)
    if arrays is None:
        return source
    cache_files.atomic_write(path, lambda tmp: np.savez(tmp, **arrays),
                             "decoding the split at every start")
    return ArraySplit(arrays)
