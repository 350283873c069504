"""Strata's user errors: mistakes in the input that the user can fix.

`run.py` prints an instance of `StrataError` as one line (`strata: error: ...`) and exits
with `EXIT_USER` (2). Every other exception is a bug: it keeps its traceback and exits
with `EXIT_BUG` (1). Raise one of these classes, with a message that names the problem
and the fix, wherever a config, a dataset, a command line or a workdir is wrong; never
rely on a library's `ValueError` or `TypeError` to reach the user (JAX raises
`TypeError` for shape bugs, and those must keep their tracebacks).

This module imports nothing, so `models/` and `data/` may use it.
"""
from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_BUG = 1          # an exception that is not a StrataError: the traceback is printed
EXIT_USER = 2         # a StrataError: one line on stderr
EXIT_PREEMPTED = 75   # EX_TEMPFAIL: stopped cleanly after a signal; rerun to resume


class StrataError(Exception):
    """A mistake in the input; the message says what is wrong and how to fix it."""


# ValueError stays a base of the classes that replaced ValueErrors, so callers that
# catch ValueError around a library call still catch them.
class ConfigError(StrataError, ValueError):
    """A bad config value, command line or workdir."""


class UnknownNameError(ConfigError):
    """A name (model, task, evaluator, op, dataset, ...) not in its table."""


class MeshError(ConfigError):
    """A mesh or batch size that does not fit the devices."""


class DataError(StrataError, ValueError):
    """A dataset that is missing, unprepared or malformed."""


class CheckpointError(StrataError):
    """A checkpoint (or `checkpoint.init_from`) that cannot be used for this config."""


class TrainingError(StrataError, RuntimeError):
    """A run that cannot go on (e.g. the loss diverged)."""


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """One line naming the bad value, the nearest valid one and all valid ones."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid: {', '.join(sorted(map(str, valid)))}."


def lookup(table: dict, kind: str, name: str):
    """`table[name]`, or an UnknownNameError listing the valid names."""
    if name not in table:
        raise UnknownNameError(unknown_name_message(kind, name, list(table)))
    return table[name]


def one_line(e: BaseException) -> str:
    """The message of `e` on one line."""
    text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return " ".join(text)
