"""Files the loop and the tools share: the repository root, atomic JSON writes, and the
advisory lock that keeps one process per workdir or sweep."""
from __future__ import annotations

import fcntl
import json
import os
from typing import Any, Callable

from errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_json(path: str, obj: Any) -> None:
    """Atomic write (sorted keys, indented): a crash never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


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
