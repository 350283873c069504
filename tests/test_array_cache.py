"""data/array_cache.py: a small split decoded once serves the same rows and the same stream."""
import os

import ml_collections
import numpy as np

from data import array_cache, pipeline, sources, subset


def _digits_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        name="digits", data_dir=data_dir, files="", targets_key="", tokenizer="bytes",
        pack_documents=False, seq_len=0, text_key="text", in_memory_max_mb=256))
    c.update(overrides)
    return c


def test_second_open_reads_arrays_with_the_rows_tfds_decodes(tfds_dir):
    tfds_source, _ = sources.open_source("digits", "train", tfds_dir)
    first, _ = sources.open_split(_digits_config(tfds_dir), "train", "to_float")
    entries = os.listdir(os.path.join(tfds_dir, array_cache.CACHE_DIR))
    assert any(e.startswith("digits-train-") and not e.endswith(".tmp") for e in entries)
    second, _ = sources.open_split(_digits_config(tfds_dir), "train", "to_float")
    assert isinstance(second, array_cache.ArraySplit) and len(second) == len(tfds_source)
    for i in (0, 7, len(tfds_source) - 1):
        want, got = tfds_source[i], second[i]
        assert want.keys() == got.keys()
        for key in want:
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype
            np.testing.assert_array_equal(got[key], want[key])
    # The training stream over the cached arrays is the stream over TFDS's rows.
    kw = dict(global_batch_size=16, preprocess="to_float(-1, 1)|pad_crop(1)", seed=3, in_memory=True)
    it_a, it_b = iter(pipeline.train_dataset(tfds_source, **kw)), iter(pipeline.train_dataset(second, **kw))
    for _ in range(3):
        a, b = next(it_a), next(it_b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # A subset of cached arrays gathers the same rows as a subset of the source.
    chosen = subset.choose(tfds_source, 100, seed=1)
    for key, value in subset.Subset(second, chosen).arrays.items():
        np.testing.assert_array_equal(value, pipeline.load_arrays(subset.Subset(tfds_source, chosen))[key])


def test_splits_over_the_memory_limit_are_not_cached(tfds_dir):
    sources.open_source("digits", "train", tfds_dir)
    cache = os.path.join(tfds_dir, array_cache.CACHE_DIR)
    listing = lambda: set(os.listdir(cache)) if os.path.isdir(cache) else set()
    before = listing()  # the session's data dir: other tests may have cached splits already
    small = _digits_config(tfds_dir, in_memory_max_mb=0)
    assert not isinstance(sources.open_split(small, "test", "to_float")[0], array_cache.ArraySplit)
    assert listing() == before


def test_unwritable_data_dir_serves_the_split_from_memory(tmp_path, capsys):
    source = [{"image": np.full((2, 2), i, np.uint8), "label": np.int64(i)} for i in range(5)]
    info = type("Info", (), {"version": "1.0.0", "data_dir": ""})()
    (tmp_path / array_cache.CACHE_DIR).write_text("a file where the cache folder would go")
    split = array_cache.cached_split(source, info, str(tmp_path), "toy", "train")
    np.testing.assert_array_equal(split[3]["image"], source[3]["image"])
    assert split[3]["label"] == 3
    assert "decoding the split at every start" in capsys.readouterr().err


def test_ragged_or_string_features_stay_in_the_source(tmp_path):
    info = type("Info", (), {"version": "1.0.0", "data_dir": ""})()
    ragged = [{"x": np.zeros(i + 1)} for i in range(3)]
    strings = [{"x": np.asarray(b"ab")} for _ in range(3)]
    assert array_cache.cached_split(ragged, info, str(tmp_path), "r", "train") is ragged
    assert array_cache.cached_split(strings, info, str(tmp_path), "s", "train") is strings
