"""JAX's persistent compilation cache, on by default for `run.py`: a rerun (a resume, the
next trial of a sweep, `run.py eval` after `train`) loads its compiled steps from disk
instead of compiling them again.

    STRATA_COMPILE_CACHE=DIR   # where (default: $XDG_CACHE_HOME/strata/jax, ~/.cache/...)
    STRATA_COMPILE_CACHE=0     # off

JAX reads these settings when it is imported, so `enable` runs before that (run.py). A
user's own JAX_COMPILATION_CACHE_DIR wins. The cached executables are the ones XLA would
build, so results are bit-identical with and without the cache.
"""
from __future__ import annotations

import os

OFF = ("0", "false", "no", "off")
MIN_COMPILE_SECONDS = "0.1"  # cache every step, eval and init function; skip trivial ones


def default_dir(environ=os.environ) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(base, "strata", "jax")


def enable(environ=os.environ) -> str | None:
    """Points JAX's persistent cache at STRATA_COMPILE_CACHE (or the default); returns the
    directory, or None when the cache is off."""
    setting = environ.get("STRATA_COMPILE_CACHE", "").strip()
    if setting.lower() in OFF:
        return None
    environ.setdefault("JAX_COMPILATION_CACHE_DIR", setting or default_dir(environ))
    environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_SECONDS)
    return environ["JAX_COMPILATION_CACHE_DIR"]
