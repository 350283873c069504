"""data.train_examples / class_balanced / train_classes: which examples a run trains on."""
import numpy as np
import pytest

from data import pipeline, subset
from errors import ConfigError, DataError
from helpers import tiny_resnet_config
from train import loop


def fake_source(n=300, num_classes=10):
    labels = np.random.default_rng(1).integers(0, num_classes, n)
    return [{"image": np.full((2, 2, 1), i, np.int32), "label": np.int64(labels[i])} for i in range(n)]


def test_the_same_examples_every_time_and_nested():
    src = fake_source()
    a = subset.choose(src, 50, seed=0)
    assert np.array_equal(a, subset.choose(src, 50, seed=0))        # fixed
    assert set(a) <= set(subset.choose(src, 100, seed=0))           # N=50 inside N=100
    assert not np.array_equal(np.sort(a), np.sort(subset.choose(src, 50, seed=1)))  # seeded
    assert len(set(a)) == 50


def test_class_balanced_and_class_filtered_counts():
    src = fake_source()
    labels = np.asarray([ex["label"] for ex in src])
    chosen = subset.choose(src, 40, balanced=True)
    assert np.array_equal(np.bincount(labels[chosen], minlength=10), np.full(10, 4))
    low = subset.choose(src, 0, classes=(0, 1, 2, 3, 4))
    assert set(labels[low]) == {0, 1, 2, 3, 4} and len(low) == np.isin(labels, range(5)).sum()
    few = subset.choose(src, 10, classes=(5, 6, 7, 8, 9), balanced=True)
    assert np.array_equal(np.bincount(labels[few], minlength=10)[5:], np.full(5, 2))


def test_bad_requests_are_one_line():
    src = fake_source(30)
    with pytest.raises(ConfigError, match="multiple of 10"):
        subset.choose(src, 15, balanced=True)
    with pytest.raises(DataError, match="train_examples=31 but the training split has 30"):
        subset.choose(src, 31)
    with pytest.raises(DataError, match="fewer than the 20 per class"):
        subset.choose(src, 200, balanced=True)


def test_process_count_does_not_change_the_stream():
    src = subset.Subset(fake_source(), subset.choose(fake_source(), 64, seed=3))
    one = next(iter(pipeline.train_dataset(src, global_batch_size=16, preprocess="", seed=0)))
    halves = [next(iter(pipeline.train_dataset(src, global_batch_size=16, preprocess="", seed=0,
                                               process_index=p, process_count=2))) for p in (0, 1)]
    np.testing.assert_array_equal(one["image"], np.concatenate([h["image"] for h in halves]))


def test_a_run_trains_on_the_subset(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=2)
    c.data.train_examples = 50
    c.data.class_balanced = True
    exp = loop.Experiment(c, str(tmp_path))
    exp.checkpointer.close()
    labels = np.asarray([int(exp.train_source[i]["label"]) for i in range(len(exp.train_source))])
    assert len(exp.train_source) == 50 and np.array_equal(np.bincount(labels), np.full(10, 5))
    loop.train(c, str(tmp_path / "run"))  # and training on it works


def test_eval_classes_filter_the_eval_splits_only(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=2)
    c.data.eval_classes = (5, 6, 7, 8, 9)
    exp = loop.Experiment(c, str(tmp_path))
    exp.checkpointer.close()
    full = exp._open(c.data.eval_split, c.data.eval_preprocess)
    evaluated = exp.source(c.data.eval_split, c.data.eval_preprocess)
    labels = lambda s: np.asarray([int(s[i]["label"]) for i in range(len(s))])  # noqa: E731
    assert set(labels(evaluated)) == {5, 6, 7, 8, 9}
    assert len(evaluated) == int(np.sum(labels(full) >= 5)) < len(full)
    assert [evaluated[i]["image"].tobytes() for i in range(3)] == [  # file order kept
        full[int(i)]["image"].tobytes() for i in np.flatnonzero(labels(full) >= 5)[:3]]
    assert set(labels(exp.train_source)) == set(range(10))  # training is not filtered
    c.data.eval_classes = (42,)
    with pytest.raises(DataError, match="no example of them"):
        subset.eval_subset(full, c.data)
