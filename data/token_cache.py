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

from data import cache_files
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


def save(path: str, array: np.ndarray) -> bool:
    """Writes `array` to `path` atomically; False, with a note on stderr, where the
    directory cannot be written: the caller then keeps the array in memory and the next
    open builds it again."""
    return cache_files.atomic_write(path, lambda tmp: np.save(tmp, array), "using it from memory")


def cached_array(path: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at `path` (memory-mapped), made by `build()` and stored first if absent."""
    if not os.path.isfile(path):
        array = build()
        if not save(path, array):
            return array
    return np.load(path, mmap_mode="r")


def _tokenize(source: Sequence[dict], tokenizer, keys: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per key: (total,) int32 ids of every record (eos after text records), (N + 1,) offsets.
    One pass over the records, so each is read once whatever the number of keys."""
    eos = np.asarray([tokenizer.eos_id], np.int32)
    pieces: list[list[np.ndarray]] = [[] for _ in keys]
    for example in cache_files.read_records(source):
        for out, key in zip(pieces, keys):
            value = field(example, key)
            ids = tokenizer.encode(value).astype(np.int32)
            out.append(ids if isinstance(value, np.ndarray) else np.concatenate([ids, eos]))
    result = []
    for out in pieces:
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in out], dtype=np.int64)])
        result.append((np.concatenate(out).astype(np.int32) if out else np.zeros(0, np.int32), offsets))
    return result


class TokenizedRecords:
    """One feature of every record as token ids: `ids(i)` -> (n_i,) int32, `lengths` (N,).

    Text records are documents: each gets end-of-sequence appended. uint8 records are
    64 KiB chunks of one byte stream (text_files, pystdlib): none between them, so `flat`
    is that stream tokenised (`chunked` is True). `id` names the cached files.
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, id: str, chunked: bool):
        self.flat, self.offsets, self.id, self.chunked = flat, offsets, id, chunked  # (total,), (N + 1,)
        self.lengths = np.diff(offsets)                                               # (N,)

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, i: int) -> np.ndarray:
        """Record i's ids (eos appended to text records): (n_i,) int32."""
        return self.flat[self.offsets[i]:self.offsets[i + 1]]


def tokenized(source: Sequence[dict], tokenizer, keys: Sequence[str], data_dir: str | None = None,
              split: str = "", dataset_id: str = "") -> list[TokenizedRecords]:
    """The features `keys` of every record of `split`, tokenised: read from the files under
    `data_dir` when a previous open stored them (memory-mapped), else tokenised in one pass
    over the records and stored there. data_dir None: in memory only, nothing stored."""
    chunked = len(source) > 0 and isinstance(field(source[0], keys[0]), np.ndarray)
    identities = [(dataset_id, split, key, tokenizer.id) for key in keys]
    ids = [hashlib.sha1(repr(i).encode("utf-8")).hexdigest()[:16] for i in identities]
    if data_dir is None:
        return [TokenizedRecords(flat, offsets, i, chunked)
                for (flat, offsets), i in zip(_tokenize(source, tokenizer, keys), ids)]
    paths = [[cache_path(data_dir, kind, split, *identity) for kind in ("tokens", "offsets")]
             for identity in identities]
    if not all(os.path.isfile(p) for pair in paths for p in pair):
        built = _tokenize(source, tokenizer, keys)
        # offsets last: its presence means both are complete
        if not all(save(t, flat) and save(o, offsets) for (flat, offsets), (t, o) in zip(built, paths)):
            return [TokenizedRecords(flat, offsets, i, chunked) for (flat, offsets), i in zip(built, ids)]
    return [TokenizedRecords(np.load(t, mmap_mode="r"), np.load(o, mmap_mode="r"), i, chunked)
            for (t, o), i in zip(paths, ids)]
