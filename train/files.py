"""One path layer for everything Strata reads or writes under a workdir or sweep dir: a local
path, or a `gs://BUCKET/PATH` URL.

Local paths go through the os module exactly as before (atomic writes: a temporary file,
then a rename). URLs go through `etils.epath` with its fsspec backend (gcsfs), the same layer
Orbax saves checkpoints through; there one object write is atomic by itself, and there are
no folders (making one is a no-op: an object's name holds its whole path). `os.path.join`,
`dirname` and `basename` work on URLs unchanged; `abspath` does not, hence `absolute`.
"""
from __future__ import annotations

import io
import os
from typing import IO, Iterator

from errors import ConfigError

# epath (ours and Orbax's) reaches gs:// through gcsfs, never TF's gfile: gfile's GCS client
# cannot be pointed at another endpoint (an emulator), and one client means one behaviour.
# Read by epath on every path operation; local paths are unaffected.
os.environ.setdefault("EPATH_USE_TF", "false")


def is_remote(path: str) -> bool:
    """True for a URL (`gs://...`), False for a local path."""
    return "://" in str(path)


def _epath(path: str):
    """The epath.Path of a URL, through gcsfs (never TF's gfile, which cannot be pointed at
    another endpoint); listings are not cached, since Orbax's tensorstore writes objects
    behind gcsfs's back."""
    try:
        import gcsfs  # noqa: F401  (epath's gs:// backend)
    except ImportError:
        raise ConfigError(f"{path}: gs:// workdirs need the gcsfs package (pip install gcsfs).") from None
    import fsspec
    fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)
    from etils import epath
    return epath.Path(path)


def absolute(path: str) -> str:
    """An absolute local path; a URL unchanged."""
    return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix that holds at least one object."""
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a folder; [] if it does not exist."""
    if is_remote(path):
        p = _epath(path)
        return [child.name for child in p.iterdir()] if p.is_dir() else []
    return os.listdir(path) if os.path.isdir(path) else []


def makedirs(path: str) -> None:
    """A local folder and its parents; nothing for a URL (a bucket has no folders, and
    gcsfs would create a missing *bucket*, which Strata never does)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def read_text(path: str, errors: str = "strict") -> str:
    if is_remote(path):
        with _epath(path).open("rb") as f:
            return f.read().decode(errors=errors)
    with open(path, errors=errors) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Whole-file write that a crash never leaves half done: tmp + rename locally, one
    object upload for a URL."""
    if is_remote(path):
        _epath(path).write_bytes(data)
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


class _Upload(io.BytesIO):
    """A file object that becomes one object (or one atomic local file) when closed."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self) -> None:
        if not self.closed:
            write_bytes(self.path, self.getvalue())
        super().close()


def open_write(path: str, text: bool = True, newline: str | None = None) -> IO:
    """A file to write whole (CSV, Markdown, PNG from matplotlib): locally `open(path, "w")`
    as before; for a URL, a buffer uploaded as one object on close."""
    if not is_remote(path):
        return open(path, "w" if text else "wb", newline=newline if text else None)
    buf = _Upload(path)
    return io.TextIOWrapper(buf, newline=newline, write_through=True) if text else buf


def rename(src: str, dst: str) -> None:
    """Moves a file or folder (for a URL: every object under it is copied, then deleted)."""
    if is_remote(src):
        _epath(src).rename(_epath(dst))
    else:
        os.rename(src, dst)


def walk_sizes(root: str) -> Iterator[tuple[str, int]]:
    """(path, size in bytes) of every file under `root`."""
    if is_remote(root):
        _epath(root)  # gcsfs is there, listings uncached
        import fsspec
        scheme = root.split("://")[0]
        for path, info in sorted(fsspec.filesystem(scheme).find(root, detail=True).items()):
            yield f"{scheme}://{path}", int(info["size"])
        return
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                yield path, os.path.getsize(path)
            except OSError:  # removed while we looked (a run cleaning up its saves)
                continue


class LineLog:
    """An append-only log of lines (metrics.jsonl, perf.jsonl). Locally an open file in
    append mode, flushed after each line, as before. A bucket object cannot be appended to,
    so for a URL the lines are kept here and the object is rewritten on each flush (these
    logs hold one short line per log window)."""

    def __init__(self, path: str):
        self.path = path
        if is_remote(path):
            self._lines = [read_text(path)] if exists(path) else []
            self._file = None
        else:
            self._file = open(path, "a")

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
        else:
            self._lines.append(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        else:
            write_text(self.path, "".join(self._lines))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self.flush()
