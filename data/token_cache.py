"""Tokenised splits and packing indices kept on disk next to the prepared data.

Tokenising a split (and packing it) is the slow part of opening text data: minutes for
WMT14's 4.5M pairs or LM1B's 30M sentences. Both are done once per (dataset version,
split, feature, tokenizer) and stored under <data_dir>/strata_tokenizers/ as .npy files
that later opens memory-map:

    tokens-<split>-<key>.npy    (total,) int32: every record's ids, one after another
    offsets-<split>-<key>.npy   (N + 1,) int64: record i is tokens[offsets[i]:offsets[i+1]]
    rows-<split>-<key>.npy      a packing index (data/packing.py), keyed also by its settings

Files are written to a temporary name and renamed, so a reader never sees half a file and
processes that build the same file at once write identical bytes.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Sequence

import numpy as np

from errors import DataError

CACHE_DIR = "strata_tokenizers"


def field(example: dict, key: str):
    """example[key], or a DataError listing the features there are."""
    if key not in example:
        raise DataError(f"the dataset has no feature {key!r} (config.data.inputs_key / "
                        f"targets_key / text_key). Valid: {', '.join(sorted(example))}.")
    return example[key]


def cache_path(data_dir: str, kind: str, split: str, *identity) -> str:
    """<data_dir>/strata_tokenizers/<kind>-<split>-<sha1 of identity>.npy."""
    key = hashlib.sha1(repr(identity).encode("utf-8")).hexdigest()[:16]
    return os.path.join(data_dir, CACHE_DIR, f"{kind}-{split.replace('/', '_')}-{key}.npy")


def save(path: str, array: np.ndarray) -> None:
    """Writes `array` to `path` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def cached_array(path: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at `path` (memory-mapped), made by `build()` and stored first if absent."""
    if not os.path.isfile(path):
        save(path, build())
    return np.load(path, mmap_mode="r")


def _tokenize(source: Sequence[dict], tokenizer, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(total,) int32 ids of every record's `key` (eos after text records), (N + 1,) offsets."""
    eos = np.asarray([tokenizer.eos_id], np.int32)
    pieces = []
    for i in range(len(source)):
        value = field(source[i], key)
        ids = tokenizer.encode(value).astype(np.int32)
        pieces.append(ids if isinstance(value, np.ndarray) else np.concatenate([ids, eos]))
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in pieces], dtype=np.int64)])
    flat = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
    return flat, offsets


class TokenizedRecords:
    """Every record's feature `key` as token ids: `ids(i)` -> (n_i,) int32, `lengths` (N,).

    Text records are documents: each gets end-of-sequence appended. uint8 records are
    64 KiB chunks of one byte stream (text_files, pystdlib): none between them, so `flat`
    is that stream tokenised (`chunked` is True).
    """

    def __init__(self, source: Sequence[dict], tokenizer, key: str, data_dir: str | None = None,
                 split: str = "", dataset_id: str = ""):
        """data_dir None: tokenise into memory, keep nothing on disk."""
        self.chunked = len(source) > 0 and isinstance(field(source[0], key), np.ndarray)
        identity = (dataset_id, split, key, tokenizer.id)
        self.id = hashlib.sha1(repr(identity).encode("utf-8")).hexdigest()[:16]
        paths = [cache_path(data_dir, kind, split, *identity) for kind in ("tokens", "offsets")
                 ] if data_dir is not None else []
        # True when this open read and tokenised the records (no complete cache).
        self.tokenized = not paths or not all(os.path.isfile(p) for p in paths)
        if self.tokenized:
            self.flat, self.offsets = _tokenize(source, tokenizer, key)
            for path, array in zip(paths, (self.flat, self.offsets)):
                save(path, array)  # offsets last: its presence means both are complete
        if paths:
            self.flat, self.offsets = (np.load(p, mmap_mode="r") for p in paths)  # (total,), (N + 1,)
        self.lengths = np.diff(self.offsets)                                      # (N,)

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, i: int) -> np.ndarray:
        """Record i's ids (eos appended to text records): (n_i,) int32, memory-mapped."""
        return self.flat[self.offsets[i]:self.offsets[i + 1]]
