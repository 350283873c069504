"""Byte-level text data: the pystdlib and text_files builders, and TextWindows."""
import os
import sys
import sysconfig

import numpy as np
import pytest

from data import sources
from data.text import (CHUNK_BYTES, FILE_SEPARATOR, TextWindows, holdout_start, split_of,
                       stdlib_files)


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def random_text(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(rng.integers(32, 127, n, dtype=np.uint8))


def stream(name, split, data_dir, **kwargs) -> bytes:
    """The whole byte stream of a split, read through TextWindows."""
    source, _ = sources.open_source(name, split, data_dir, **kwargs)
    windows = TextWindows(source, seq_len=1)
    return windows.read(0, windows.num_bytes).tobytes()


# --- TextWindows ---------------------------------------------------------------------

def test_windows_are_the_byte_slices_across_records():
    data = random_text(1000)
    cuts = [0, 7, 300, 301, 650, 1000]  # records of uneven length, one of a single byte
    source = [{"text": np.frombuffer(data[a:b], np.uint8)} for a, b in zip(cuts, cuts[1:])]
    w = TextWindows(source, seq_len=16, cache_bytes=100)  # a tiny cache: records re-read
    assert len(w) == (1000 - 1) // 16
    for i in [0, 1, 18, 19, 40, len(w) - 1]:
        tokens = w[i]["tokens"]
        assert tokens.dtype == np.int32 and tokens.shape == (17,)
        assert bytes(tokens.astype(np.uint8)) == data[i * 16:i * 16 + 17]
    assert bytes(w[-1]["tokens"].astype(np.uint8)) == data[(len(w) - 1) * 16:len(w) * 16 + 1]
    with pytest.raises(IndexError):
        w[len(w)]
    expected = np.bincount(np.frombuffer(data[1:10 * 16 + 1], np.uint8), minlength=256)
    np.testing.assert_array_equal(w.target_counts(10), expected)
    # All windows at once (what a split held in memory loads) are the windows one by one.
    every = w.arrays["tokens"]
    assert every.dtype == np.int32 and every.shape == (len(w), 17)
    np.testing.assert_array_equal(every, np.stack([w[i]["tokens"] for i in range(len(w))]))


def test_windows_accept_string_records_and_refuse_short_text():
    w = TextWindows([{"text": b"abcdefghij"}], seq_len=4)
    assert len(w) == 2 and bytes(w[1]["tokens"].astype(np.uint8)) == b"efghi"
    with pytest.raises(sources.DataError, match="seq_len"):
        TextWindows([{"text": b"abc"}], seq_len=4)


# --- text_files ----------------------------------------------------------------------

def test_single_file_holds_out_its_last_tenth(tmp_path):
    data = random_text(3 * CHUNK_BYTES + 123)  # several records, order must survive
    path = write(tmp_path / "book.txt", data)
    cut = holdout_start(len(data))
    assert len(data) - cut == len(data) // 10
    dd = str(tmp_path / "tfds")
    assert stream("text_files", "train", dd, files=(path,)) == data[:cut]
    assert stream("text_files", "validation", dd, files=(path,)) == data[cut:]


def test_several_files_split_by_a_stable_hash_of_their_names(tmp_path):
    # Golden values: changing `split_of` would silently reshuffle everyone's splits.
    assert split_of("part23.txt") == split_of("part52.txt") == "validation"
    assert split_of("part0.txt") == split_of("part1.txt") == "train"
    texts = {n: random_text(200 + i, seed=i) for i, n in enumerate(["part0.txt", "part23.txt", "part1.txt"])}
    files = tuple(write(tmp_path / n, t) for n, t in texts.items())
    dd = str(tmp_path / "tfds")
    assert stream("text_files", "train", dd, files=files) == (
        texts["part0.txt"] + FILE_SEPARATOR + texts["part1.txt"])
    assert stream("text_files", "validation", dd, files=files) == texts["part23.txt"]


def test_several_files_all_hashed_to_train_hold_out_the_last_files_tail(tmp_path):
    a, b = random_text(500, 1), random_text(400, 2)
    files = (write(tmp_path / "part0.txt", a), write(tmp_path / "part1.txt", b))
    dd = str(tmp_path / "tfds")
    assert stream("text_files", "train", dd, files=files) == a + FILE_SEPARATOR + b[:360]
    assert stream("text_files", "validation", dd, files=files) == b[360:]


def test_different_file_sets_do_not_collide(tmp_path):
    dd = str(tmp_path / "tfds")
    a = write(tmp_path / "a.txt", random_text(300, 1))
    b = write(tmp_path / "b.txt", random_text(300, 2))
    builder_a = sources.prepare("text_files", dd, files=(a,))
    builder_b = sources.prepare("text_files", dd, files=(b,))
    assert builder_a.data_dir != builder_b.data_dir
    assert stream("text_files", "train", dd, files=(a,)) == open(a, "rb").read()[:270]
    assert stream("text_files", "train", dd, files=(b,)) == open(b, "rb").read()[:270]
    os.utime(a, ns=(0, 0))  # the same path, touched: a new config, prepared afresh
    assert sources.get_builder("text_files", dd, files=(a,)).data_dir != builder_a.data_dir


def test_missing_file_is_a_one_line_data_error(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(sources.DataError, match="nope.txt") as e:
        sources.open_source("text_files", "train", str(tmp_path / "tfds"), files=(missing,))
    assert "\n" not in str(e.value)
    with pytest.raises(sources.DataError, match="config.data.files"):
        sources.get_builder("text_files", str(tmp_path / "tfds"))


# --- pystdlib ------------------------------------------------------------------------

def test_pystdlib_files_and_split_are_stable():
    files = stdlib_files()
    assert "os.py" in files and "json/__init__.py" in files
    assert not any(f.startswith(("site-packages/", "test/")) or "/tests/" in f for f in files)
    assert files == sorted(files)
    # Golden values (sha1 of the relative path): these files never change split.
    assert [split_of(f) for f in ("os.py", "json/__init__.py", "codeop.py", "asyncio/__main__.py")] == [
        "train", "train", "validation", "validation"]
    share = sum(split_of(f) == "validation" for f in files) / len(files)
    assert 0.02 < share < 0.08


def test_pystdlib_validation_stream_is_its_files_joined(tfds_dir):
    # Preparing the whole standard library (~12 MB) takes about a second.
    root = sysconfig.get_paths()["stdlib"]
    val = [f for f in stdlib_files() if split_of(f) == "validation"]
    expected = FILE_SEPARATOR.join(open(os.path.join(root, f), "rb").read() for f in val)
    assert stream("pystdlib", "validation", tfds_dir) == expected
    info = sources.get_builder("pystdlib", tfds_dir).info
    assert info.metadata["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert info.splits["train"].num_examples > 100
