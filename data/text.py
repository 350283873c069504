"""Byte-level text: TFDS builders `pystdlib` and `text_files`, and `TextWindows`.

Both builders store each split as one byte stream cut into ArrayRecord records of
`CHUNK_BYTES` (64 KiB) under the feature `text` (uint8, raw bytes on disk), in stream
order; only a split's last record is shorter. Files are concatenated in a fixed order
with `FILE_SEPARATOR` (one b"\\n") between them; bytes are stored as read, never decoded.

    pystdlib    the `.py` files of the running Python's standard library, sorted by
                relative path (no site-packages, no test directories); a file goes to
                validation when sha1(relative path) % 100 < 5 (~5%, 34 of 732 files on 3.11)
    text_files  local files from the builder kwarg `files=(...)` (config.data.files), in
                the order given. One file: its last 10% of bytes is validation. Several:
                the same hash of each file's name; if a split would be empty, the last
                10% of the last file is validation instead. The builder config is named
                by a hash of the files' resolved paths, sizes and mtimes, so different
                (or edited) file sets are prepared into different directories.

`TextWindows` turns such a split into language-model examples: window i is the bytes
[i*seq_len, i*seq_len + seq_len + 1) of the stream, as {"tokens": (seq_len + 1,) int32}.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import sys
import sysconfig
import threading
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from errors import ConfigError, DataError

CHUNK_BYTES = 64 * 1024
FILE_SEPARATOR = b"\n"
VALIDATION_PERCENT = 5       # files whose path hashes below this go to validation
HOLDOUT_DIVISOR = 10         # a held-out tail is the last 1/10 of a file's bytes
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})

# One split's content: (path, start byte, stop byte or None for the end of the file).
Segment = tuple[str, int, "int | None"]


def split_of(relpath: str) -> str:
    """"validation" for about VALIDATION_PERCENT% of paths, else "train"; stable across
    machines and runs (sha1 of the POSIX path, not Python's salted `hash`)."""
    digest = hashlib.sha1(relpath.replace(os.sep, "/").encode("utf-8")).hexdigest()
    return "validation" if int(digest, 16) % 100 < VALIDATION_PERCENT else "train"


def holdout_start(num_bytes: int) -> int:
    """Where a file's held-out tail starts: its last `num_bytes // 10` bytes are validation."""
    return num_bytes - num_bytes // HOLDOUT_DIVISOR


def _read(segment: Segment) -> bytes:
    path, start, stop = segment
    with open(path, "rb") as f:
        f.seek(start)
        return f.read() if stop is None else f.read(stop - start)


def _chunks(segments: Sequence[Segment]) -> Iterator[tuple[int, dict]]:
    """(key, {"text": uint8 (<= CHUNK_BYTES,)}) over the segments joined by FILE_SEPARATOR."""
    buffer, key = bytearray(), 0
    for i, segment in enumerate(segments):
        if i:
            buffer += FILE_SEPARATOR
        buffer += _read(segment)
        while len(buffer) >= CHUNK_BYTES:
            yield key, {"text": np.frombuffer(bytes(buffer[:CHUNK_BYTES]), np.uint8)}
            del buffer[:CHUNK_BYTES]
            key += 1
    if buffer:
        yield key, {"text": np.frombuffer(bytes(buffer), np.uint8)}


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "text": tfds.features.Tensor(shape=(None,), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.BYTES),
    })


# --- pystdlib ------------------------------------------------------------------------

def stdlib_files(root: str | None = None) -> list[str]:
    """Sorted POSIX paths (relative to `root`, default the running stdlib) of its `.py`
    files, skipping SKIP_DIRS, `config-*` build dirs and the per-build `_sysconfigdata*`."""
    root = root or sysconfig.get_paths()["stdlib"]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def _python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


class PyStdlib(tfds.core.GeneratorBasedBuilder):
    """The running Python's standard library source as a byte stream (offline).

    Test directories are left out: they hold deliberately malformed files (bad encodings,
    huge generated tables) and would double the size. The data depend on the Python
    version, so the builder config is named after it (e.g. `python3_11_7`).
    """

    name = "pystdlib"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "64 KiB uint8 chunks; sha1(relpath) % 100 < 5 -> validation."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name="python" + _python_version().replace(".", "_"),
        description=f"Python {_python_version()} standard library ({sysconfig.get_paths()['stdlib']}).")]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"{type(self).__doc__}\nPython {_python_version()}, byte level.",
            features=_features(),
            metadata=tfds.core.MetadataDict(python_version=_python_version()),
            disable_shuffling=True,  # records stay in stream order
            homepage="https://docs.python.org/3/library/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        root = sysconfig.get_paths()["stdlib"]
        splits: dict[str, list[Segment]] = {"train": [], "validation": []}
        for rel in stdlib_files(root):
            splits[split_of(rel)].append((os.path.join(root, rel), 0, None))
        return {name: self._generate_examples(segments) for name, segments in splits.items()}

    def _generate_examples(self, segments: Sequence[Segment]):
        yield from _chunks(segments)


# --- text_files ----------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
    """A set of local files; the name hashes their resolved paths, sizes and mtimes."""
    files: tuple[str, ...] = ()


def text_files_config(files: Sequence[str]) -> TextFilesConfig:
    """The config for `files`; a missing file is a `DataError` naming it."""
    if not files:
        raise DataError("dataset 'text_files' needs files: set --config.data.files=PATH[,PATH...].")
    resolved = []
    for f in files:
        path = os.path.realpath(os.path.expanduser(f))
        if not os.path.isfile(path):
            raise DataError(f"text file {f!r} does not exist (config.data.files).")
        resolved.append(path)
    identity = "\n".join(f"{p}\t{os.path.getsize(p)}\t{os.stat(p).st_mtime_ns}" for p in resolved)
    name = "files_" + hashlib.sha1(identity.encode("utf-8")).hexdigest()[:16]
    return TextFilesConfig(name=name, files=tuple(resolved), version="1.0.0",
                           description="Byte streams of: " + ", ".join(resolved))


def text_files_splits(files: Sequence[str]) -> dict[str, list[Segment]]:
    """Which bytes of `files` (in the order given) form each split.

    One file: its last 10% of bytes is validation. Several: each file goes whole to the
    split of `split_of(basename)`; if that leaves a split empty, every file is train
    except the last 10% of the last file.
    """
    splits: dict[str, list[Segment]] = {"train": [], "validation": []}
    if len(files) > 1:
        for f in files:
            splits[split_of(os.path.basename(f))].append((f, 0, None))
        if splits["train"] and splits["validation"]:
            return splits
    cut = holdout_start(os.path.getsize(files[-1]))
    return {"train": [(f, 0, None) for f in files[:-1]] + [(files[-1], 0, cut)],
            "validation": [(files[-1], cut, None)]}


class TextFiles(tfds.core.GeneratorBasedBuilder):
    """Local text files as byte streams: `TextFiles(files=("a.txt", ...), data_dir=...)`."""

    name = "text_files"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "64 KiB uint8 chunks; one file: last 10% is validation."}

    def __init__(self, *, files: Sequence[str] = (), config=None, **kwargs):
        if files or not isinstance(config, TextFilesConfig):
            config = text_files_config(files)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(description=type(self).__doc__, features=_features(),
                                              disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        splits = text_files_splits(self.builder_config.files)
        return {name: self._generate_examples(segments) for name, segments in splits.items()}

    def _generate_examples(self, segments: Sequence[Segment]):
        yield from _chunks(segments)


# --- windows -------------------------------------------------------------------------

def _as_bytes(value) -> np.ndarray:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return np.frombuffer(value, np.uint8)
    return np.asarray(value, np.uint8).reshape(-1)


class TextWindows:
    """Random access to fixed windows over the concatenated records of a text source.

    Window i is the bytes [i*seq_len, i*seq_len + seq_len + 1): inputs and shifted
    targets of one example; consecutive windows share one byte (stride `seq_len`).
    Construction reads every record once for its length; afterwards a window reads
    the one or two records it spans, through an LRU cache of up to `cache_bytes`.
    Safe to use from Grain's reader threads.
    """

    def __init__(self, source: Sequence[dict], seq_len: int, key: str = "text",
                 cache_bytes: int = 64 << 20):
        if seq_len < 1:
            raise ConfigError(f"seq_len must be positive, got {seq_len}.")
        self.seq_len, self.key = seq_len, key
        self._source = source
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cached, self._cache_bytes = 0, cache_bytes
        self._lock = threading.Lock()
        lengths = [len(self._record(i)) for i in range(len(source))]
        self._starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])  # (R + 1,)
        self.num_bytes = int(self._starts[-1])
        self._len = max((self.num_bytes - 1) // seq_len, 0)
        if self._len == 0:
            raise DataError(f"a text split of {self.num_bytes} bytes holds no window of "
                            f"seq_len + 1 = {seq_len + 1} bytes; lower data.seq_len or add text.")

    def _record(self, i: int) -> np.ndarray:
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        data = _as_bytes(self._source[i][self.key])
        with self._lock:
            if i not in self._cache:
                self._cache[i] = data
                self._cached += data.nbytes
                while self._cached > self._cache_bytes and len(self._cache) > 1:
                    self._cached -= self._cache.popitem(last=False)[1].nbytes
        return data

    def read(self, start: int, stop: int) -> np.ndarray:
        """Bytes [start, stop) of the stream, uint8."""
        pieces = []
        r = int(np.searchsorted(self._starts, start, side="right")) - 1
        while start < stop:
            record = self._record(r)
            offset = start - int(self._starts[r])
            piece = record[offset:offset + stop - start]
            pieces.append(piece)
            start += len(piece)
            r += 1
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"window {i} out of range [0, {self._len})")
        start = i * self.seq_len
        return {"tokens": self.read(start, start + self.seq_len + 1).astype(np.int32)}  # (T + 1,)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every window at once, {"tokens": (N, T + 1) int32}, from one read of the stream:
        what `pipeline.load_arrays` takes for a split held in memory (1 MiB of text: 1.25 s
        stacking the windows one `__getitem__` at a time, 0.19 s this way, most of it
        reading the records)."""
        stream = self.read(0, self._len * self.seq_len + 1)
        starts = np.arange(self._len, dtype=np.int64)[:, None] * self.seq_len
        return {"tokens": stream[starts + np.arange(self.seq_len + 1)].astype(np.int32)}

    def target_counts(self, num_windows: int | None = None) -> np.ndarray:
        """(256,) counts of the target bytes (each window's tokens[1:]) of the first
        `num_windows` windows: the bytes [1, n*seq_len + 1) of the stream."""
        n = self._len if num_windows is None else min(num_windows, self._len)
        counts = np.zeros(256, np.int64)
        for start in range(1, n * self.seq_len + 1, CHUNK_BYTES):
            stop = min(start + CHUNK_BYTES, n * self.seq_len + 1)
            counts += np.bincount(self.read(start, stop), minlength=256)
        return counts
