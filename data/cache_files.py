"""What the on-disk data caches share (data/array_cache.py, data/token_cache.py): writing a
file so that no reader ever sees half of it, and reading every record of a source in
batches."""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterator, Sequence

READ_BATCH = 1024  # records per batched read (ArrayRecord reads a batch in parallel)


def atomic_write(path: str, write: Callable[[str], None], fallback: str) -> bool:
    """Calls `write(tmp)` on a temporary name with `path`'s extension, then renames it to
    `path`: processes that build the same file at once each rename a complete one. False,
    with one line on stderr ending in `fallback` (what the caller does instead), where the
    directory cannot be written (a read-only data_dir)."""
    tmp = f"{path}.{os.getpid()}.tmp{os.path.splitext(path)[1]}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
        return True
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        print(f"strata: cannot keep {os.path.basename(path)} in {os.path.dirname(path)} "
              f"({type(e).__name__}: {e.strerror}); {fallback}", file=sys.stderr, flush=True)
        return False


def read_records(source: Sequence[dict]) -> Iterator[dict]:
    """Every record of `source` in order, read in batches where the source can (a tfds
    data source: 2x faster than one by one; its mocked form cannot, nor can a list)."""
    batched = getattr(source, "__getitems__", None)
    for start in range(0, len(source), READ_BATCH):
        keys = list(range(start, min(start + READ_BATCH, len(source))))
        if batched is not None:
            try:
                records = batched(keys)
            except (TypeError, NotImplementedError):  # tfds.testing.mock_data's sources
                batched = None
        if batched is None:
            records = [source[i] for i in keys]
        yield from records
