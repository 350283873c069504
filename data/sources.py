"""Opening TFDS datasets as random-access sources, preparing the embedded ones offline.

Training reads ArrayRecord files through `tfds.data_source` (random access, no
TensorFlow in the input path). Embedded datasets are prepared on first use; any other
TFDS name must be prepared once with `python run.py prepare NAME`.
"""
from __future__ import annotations

import difflib
import importlib
import os
from typing import Any, Sequence

import tensorflow_datasets as tfds

from errors import DataError, unknown_name_message

# Builders that need no network: name -> "module:Class".
EMBEDDED: dict[str, str] = {
    "digits": "data.digits:Digits",
    "pystdlib": "data.text:PyStdlib",
    "text_files": "data.text:TextFiles",
    "numbers_translate": "data.numbers:NumbersTranslate",
}


def default_data_dir(data_dir: str | None = None) -> str:
    """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _embedded_builder(name: str, data_dir: str, builder_kwargs: dict) -> tfds.core.DatasetBuilder:
    module_name, class_name = EMBEDDED[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(data_dir=data_dir, **builder_kwargs)


def get_builder(name: str, data_dir: str | None = None, **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `name` (embedded or any registered TFDS dataset, `name:version` ok)."""
    data_dir = default_data_dir(data_dir)
    if name.split(":")[0].split("/")[0] in EMBEDDED:
        return _embedded_builder(name.split(":")[0].split("/")[0], data_dir, builder_kwargs)
    try:
        return tfds.builder(name, data_dir=data_dir, **builder_kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        known = list(EMBEDDED) + list(tfds.list_builders(with_community_datasets=False))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"unknown dataset {name!r}.{hint} Embedded (offline): {', '.join(sorted(EMBEDDED))}; "
            f"or any TFDS name (see tfds.list_builders()).") from None


PROBE_TIMEOUT_S = 5.0  # per host: a download that cannot start fails in seconds, not minutes


def _proxy_for(url: str) -> str | None:
    """The proxy URL that a download of `url` goes through, if the environment sets one."""
    import urllib.request
    scheme = url.split(":", 1)[0]
    if urllib.request.proxy_bypass(url.split("/")[2] if "//" in url else url):
        return None
    return urllib.request.getproxies().get(scheme)


def unreachable_host(urls: Sequence[str], timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str] | None:
    """(host, reason) for the first download host (or its proxy) that refuses a TCP
    connection within `timeout` seconds; None when all answer."""
    import socket
    from urllib.parse import urlsplit
    seen = set()
    for url in urls:
        target = urlsplit(_proxy_for(url) or url)
        port = target.port or (443 if target.scheme == "https" else 80)
        if (target.hostname, port) in seen or not target.hostname:
            continue
        seen.add((target.hostname, port))
        try:
            socket.create_connection((target.hostname, port), timeout=timeout).close()
        except OSError as e:
            return f"{target.hostname}:{port}", f"{type(e).__name__}: {e}"
    return None


def _check_manual_download(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> str | None:
    """The manual-download directory of a dataset that needs one (checked to exist and
    hold files), else None."""
    instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if not instructions:
        return None
    where = os.path.expanduser(manual_dir or os.path.join(builder._data_dir_root, "downloads", "manual"))
    if not os.path.isdir(where) or not os.listdir(where):
        from errors import one_line
        raise DataError(
            f"{builder.name} needs a manual download, and {where} is missing or empty: "
            f"{one_line(instructions).rstrip('.')}. Then run: python run.py prepare {builder.name} "
            f"--manual_dir DIR (the folder holding those files).")
    return where


def _download_and_prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None) -> None:
    import sys
    manual = _check_manual_download(builder, manual_dir)
    if manual is None:
        # TFDS takes a file from --manual_dir when it is there under its checksum name.
        files = {url: (info.filename if info and info.filename else url.rsplit("/", 1)[-1])
                 for url, info in (getattr(builder, "url_infos", None) or {}).items()}
        have = set(os.listdir(manual_dir)) if manual_dir and os.path.isdir(manual_dir) else set()
        down = unreachable_host([u for u, f in files.items() if f not in have])
        if down:
            raise DataError(
                f"cannot download {builder.name}: {down[0]} is unreachable ({down[1]}). Prepare "
                f"it on a machine with network (python run.py prepare {builder.name} --data_dir DIR) "
                f"and copy DIR/{builder.name} into {builder._data_dir_root}, or put its files "
                f"({', '.join(sorted(files.values()))}) in a folder DIR and pass --manual_dir DIR.")
    print(f"strata: preparing {builder.name} into {builder.data_dir} (once)", file=sys.stderr, flush=True)
    tfds.disable_progress_bar()
    config = tfds.download.DownloadConfig(manual_dir=manual or manual_dir)
    builder.download_and_prepare(file_format="array_record", download_config=config)


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
    """Prepares `name` into ArrayRecord files under `data_dir` (downloads where needed;
    datasets with a manual download read their files from `manual_dir`). A dataset whose
    download host cannot be reached, or whose manual files are missing, is a one-line
    DataError within seconds."""
    builder = get_builder(name, data_dir, **builder_kwargs)
    if not builder.is_prepared():
        _download_and_prepare(builder, manual_dir)
    return builder


def open_source(name: str, split: str, data_dir: str | None = None, decoders: dict | None = None,
                **builder_kwargs: Any) -> tuple[Sequence[dict], tfds.core.DatasetInfo]:
    """A random-access source of decoded examples and the dataset's info.

    Embedded datasets are prepared on first use; others must have been prepared.
    `decoders` is TFDS's (e.g. `{"image": tfds.decode.SkipDecoding()}` for encoded bytes).
    """
    data_dir = default_data_dir(data_dir)
    builder = get_builder(name, data_dir, **builder_kwargs)
    embedded = name.split(":")[0] in EMBEDDED
    if not builder.is_prepared() and embedded:
        _download_and_prepare(builder)
    if builder.is_prepared():
        file_format = getattr(builder.info, "file_format", None)
        file_format = str(getattr(file_format, "value", file_format) or "")
        if file_format and file_format != "array_record":
            raise DataError(
                f"dataset {name!r} in {data_dir} is stored as {file_format}, but Strata reads "
                f"ArrayRecord; re-prepare it with: python run.py prepare {name} --data_dir NEW_DIR")
        splits = list(builder.info.splits)
        if split.split("[")[0] not in splits:
            raise DataError(f"dataset {name!r} has no split {split!r}. Valid: {', '.join(splits)}.")
    try:  # also the path taken under tfds.testing.mock_data, where nothing is prepared
        source = builder.as_data_source(split=split, decoders=decoders)
    except Exception:
        if builder.is_prepared():
            raise
        raise DataError(
            f"dataset {name!r} is not prepared in {data_dir}; prepare it once with: "
            f"python run.py prepare {name} --data_dir {data_dir}") from None
    return source, builder.info


def open_split(data_config: Any, split: str,
               preprocess: str = "") -> tuple[Sequence[dict], tfds.core.DatasetInfo]:
    """The source the pipeline reads for `split` of `config.data`, to be preprocessed by
    the ops spec `preprocess` (its `decode` ops get the encoded bytes, see `skip_decoding`).

    A split that fits in memory (`data.in_memory_max_mb`) and needs no `decode` op is read
    from its decoded arrays (data/array_cache.py) after the first open.
    With `data.seq_len > 0` the records are byte/token streams and the source yields
    fixed-length windows `{"tokens": (seq_len + 1,)}` over their concatenation. With a
    `data.tokenizer` other than bytes, sequence pairs (`data.targets_key`) or
    `data.pack_documents`, the rows are tokenised (and packed) by data/packing.py.
    """
    kwargs = {}
    files = data_config.files
    if files:
        kwargs["files"] = tuple(f for f in files.split(",") if f)
    source, info = open_source(data_config.name, split, data_config.data_dir or None,
                               decoders=skip_decoding(preprocess), **kwargs)
    if data_config.targets_key or data_config.tokenizer != "bytes" or data_config.pack_documents:
        from data.packing import tokenized_split
        return tokenized_split(data_config, split, source, info, lambda s: open_source(
            data_config.name, s, data_config.data_dir or None, **kwargs)[0],
            default_data_dir(data_config.data_dir or None))
    seq_len = data_config.seq_len
    if seq_len:
        from data.text import TextWindows
        source = TextWindows(source, seq_len, key=data_config.text_key)
    elif skip_decoding(preprocess) is None and fits_in_memory(info, split, data_config.in_memory_max_mb):
        from data.array_cache import cached_split  # decoded once, then read as arrays
        source = cached_split(source, info, default_data_dir(data_config.data_dir or None),
                              data_config.name, split, kwargs.get("files"))
    return source, info


def skip_decoding(spec: str) -> dict | None:
    """TFDS decoders that leave the features read by the spec's `decode` ops as encoded
    bytes, so each image is decoded once, by that op (Pillow, on Grain's reader threads),
    rather than by TFDS's TensorFlow decoder first; None when the spec has no `decode`."""
    from data import ops
    keys = [op.decodes for op in ops.parse(spec).example if hasattr(op, "decodes")]
    return {k: tfds.decode.SkipDecoding() for k in keys} or None


def fits_in_memory(info: tfds.core.DatasetInfo, split: str, max_mb: float) -> bool:
    """Whether `split` is small enough (its prepared files at most `max_mb` MB) to be held
    in memory as arrays; never when `max_mb` is 0 or the size is unknown."""
    if not max_mb:
        return False
    try:
        num_bytes = info.splits[split].num_bytes
    except Exception:  # unknown split size (e.g. a sliced or mocked split)
        return False
    return 0 < num_bytes <= max_mb * 2**20
