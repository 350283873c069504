"""Files the loop and the tools share: the repository root, atomic JSON writes, and the
advisory lock that keeps one process per workdir or sweep."""
from __future__ import annotations

import fcntl
import json
import os
from typing import Any, Callable

from errors import ConfigError
from train import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_json(path: str, obj: Any) -> None:
    """Atomic write (sorted keys, indented): a crash never leaves half a file. `path` may
    be a gs:// URL (train/files.py)."""
    files.write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def exclusive_lock(path: str, busy: str, *, wait: bool = False,
                   say: Callable[[str], None] | None = None) -> int:
    """An exclusive `flock` on `path`, holding this process's pid; returns its fd (close it
    to release). The OS drops the lock when its holder dies, even by SIGKILL, so a crash
    never leaves a stale lock. If another process holds it: waits (`wait`, after telling
    `say`) or raises a ConfigError: `busy` formatted with the holder's `pid` and the
    lock's `folder`, e.g. "another run (pid {pid}) is training in {folder}; ..."."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        if not wait:
            os.close(fd)
            raise ConfigError(busy.format(pid=holder, folder=os.path.dirname(path))) from None
        if say is not None:
            say(f"waiting for pid {holder}, still running in {os.path.dirname(path)}")
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def hold_lock(path: str, busy: str) -> Callable[[], None]:
    """`exclusive_lock` (no waiting) for a local path, a lock object (train/bucket.py) for a
    gs:// URL; returns the function that releases it."""
    if files.is_remote(path):
        from train import bucket
        return bucket.BucketLock(path).acquire(busy).release
    fd = exclusive_lock(path, busy)
    return lambda: os.close(fd)  # closing releases the flock
