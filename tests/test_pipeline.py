"""The input pipeline: vectorised ops with position-keyed randomness, the same stream from
disk or memory and for any process count, resumable iterators, masked eval batches; the
per-example stage before stacking keeps the same contracts."""
import numpy as np
import pytest

from data import ops, pipeline
from errors import ConfigError, DataError


def make_source(n: int = 50, size: int = 6) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (size, size, 1), dtype=np.uint8), "label": np.int64(i)}
            for i in range(n)]


def make_ragged_source(n: int = 40) -> list[dict]:
    """Images of differing sizes (6..10 square): they cannot be stacked as they are."""
    rng = np.random.default_rng(1)
    sizes = rng.integers(6, 11, n)
    return [{"image": rng.integers(0, 256, (s, s, 1), dtype=np.uint8), "label": np.int64(i)}
            for i, s in enumerate(sizes)]


def random_window(size: int):
    """A per-example test op: a random size x size window of an (H, W, C) image."""
    def op(example, rand):
        img = example["image"]
        assert len(rand) == 1  # one row: this example's position
        y, x = (rand.uniform(2)[0] * (np.array(img.shape[:2]) - size + 1)).astype(int)
        return {**example, "image": img[y:y + size, x:x + size], "offset": np.array([y, x])}
    return op


@pytest.fixture
def window_op(monkeypatch):
    monkeypatch.setitem(ops.EXAMPLE_OPS, "random_window", random_window)


def take(ds, n: int) -> list[dict]:
    it = iter(ds)
    return [next(it) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_row_random_depends_only_on_seed_and_position():
    together = ops.RowRandom(3, [10, 11, 12]).uniform(4)
    alone = ops.RowRandom(3, [11]).uniform(4)
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(ops.RowRandom(4, [11]).uniform(4), alone)
    # The numbers of stream 0 are those of every run made before the per-example stage.
    np.testing.assert_array_equal(ops.RowRandom(7, [0, 123456789]).uniform(2),
                                  [[0.950161381935685, 0.8796869809048742],
                                   [0.28535991495768787, 0.8730760770817398]])
    # The per-example stage draws other numbers than the batched stage for the same row.
    assert not np.array_equal(ops.RowRandom(3, [11], stream=ops.EXAMPLE_STREAM).uniform(4), alone)
    one_of_three = ops.RowRandom(3, [10, 11, 12], stream=ops.EXAMPLE_STREAM).row(1)
    np.testing.assert_array_equal(one_of_three.uniform(4),
                                  ops.RowRandom(3, [11], stream=ops.EXAMPLE_STREAM).uniform(4))
    draws = ops.RowRandom(0, np.arange(20_000)).integers(0, 3)
    assert set(np.unique(draws)) == {0, 1, 2}
    assert abs(np.mean(draws == 0) - 1 / 3) < 0.02


def test_pad_crop_is_a_shifted_window_of_the_padded_image():
    src = make_source(8)
    batch = ops.apply("pad_crop(1)", src, seed=5)
    for row, ex in zip(batch["image"], src):
        padded = np.pad(ex["image"], ((1, 1), (1, 1), (0, 0)))
        windows = [padded[dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        assert any(np.array_equal(row, w) for w in windows)
    # Some rows move: the op is not the identity.
    assert any(not np.array_equal(row, ex["image"]) for row, ex in zip(batch["image"], src))


def test_ops_compose_and_unknown_names_are_refused():
    batch = ops.apply("to_float(-1, 1)|rows_as_sequence|keep('image')", make_source(3))
    assert set(batch) == {"image"} and batch["image"].shape == (3, 6, 6)
    assert batch["image"].dtype == np.float32 and batch["image"].min() >= -1 and batch["image"].max() <= 1
    with pytest.raises(ValueError, match="Did you mean 'pad_crop'"):
        ops.parse("pad_crp(1)")


def test_every_epoch_visits_every_example_once_in_a_new_order():
    src = make_source(50)
    ds = pipeline.train_dataset(src, global_batch_size=10, preprocess="", seed=1, in_memory=True)
    labels = np.concatenate([b["label"] for b in take(ds, 10)])  # two epochs
    assert sorted(labels[:50]) == list(range(50)) and sorted(labels[50:]) == list(range(50))
    assert not np.array_equal(labels[:50], labels[50:])


def test_in_memory_and_per_example_reads_give_the_same_stream():
    src = make_source()
    kw = dict(global_batch_size=8, preprocess="to_float|pad_crop(1)|flip_lr", seed=2)
    assert_same(take(pipeline.train_dataset(src, in_memory=True, **kw), 12),
                take(pipeline.train_dataset(src, in_memory=False, **kw), 12))


def test_two_processes_split_the_one_process_stream():
    src = make_source()
    kw = dict(global_batch_size=8, preprocess="to_float|pad_crop(1)", seed=3, in_memory=True)
    one = take(pipeline.train_dataset(src, **kw), 6)
    halves = [take(pipeline.train_dataset(src, process_index=p, process_count=2, **kw), 6) for p in (0, 1)]
    rebuilt = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)]
    assert_same(one, rebuilt)


def test_iterator_state_resumes_the_stream_exactly():
    src = make_source()
    ds = pipeline.train_dataset(src, global_batch_size=8, preprocess="pad_crop(1)", seed=4, in_memory=True)
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = iter(ds)
    resumed.set_state(state)
    assert_same([next(resumed) for _ in range(3)], expected)


def test_eval_batches_cover_the_split_once_with_padding_masked():
    src = make_source(18)
    batches = [list(pipeline.eval_batches(src, global_batch_size=8, preprocess="to_float",
                                          process_index=p, process_count=2)) for p in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == 3
    seen = np.concatenate([b["label"][b["mask"] > 0] for per in batches for b in per])
    assert sorted(seen) == list(range(18))
    assert batches[1][-1]["mask"].sum() == 0  # process 1's last rows are all padding


def test_only_small_splits_of_known_size_are_held_in_memory():
    from types import SimpleNamespace

    from data import sources
    info = SimpleNamespace(splits={"train": SimpleNamespace(num_bytes=3 * 2**20),
                                   "mocked": SimpleNamespace(num_bytes=0)})
    assert sources.fits_in_memory(info, "train", 4)
    assert not sources.fits_in_memory(info, "train", 2)
    assert not sources.fits_in_memory(info, "train", 0)        # 0 = never
    assert not sources.fits_in_memory(info, "mocked", 256)     # size unknown
    assert not sources.fits_in_memory(info, "test", 256)       # no such split


def test_per_example_randomness_is_keyed_by_position(window_op):
    src = make_ragged_source(12)
    batch = ops.apply("random_window(5)|to_float", src, seed=9)
    assert batch["image"].shape == (12, 5, 5, 1) and batch["image"].dtype == np.float32
    assert len({tuple(o) for o in batch["offset"]}) > 3  # the windows move
    for r in (0, 7, 11):  # alone, at its position, a row comes out the same
        alone = ops.apply("random_window(5)|to_float", src[r:r + 1], seed=9, first_position=r)
        np.testing.assert_array_equal(alone["image"][0], batch["image"][r])
        np.testing.assert_array_equal(alone["offset"][0], batch["offset"][r])


def test_per_example_stream_is_the_same_for_any_process_count_and_from_memory(window_op):
    src = make_ragged_source()
    kw = dict(global_batch_size=8, preprocess="random_window(5)|to_float|flip_lr", seed=3)
    one = take(pipeline.train_dataset(src, **kw), 6)
    assert_same(one, take(pipeline.train_dataset(src, in_memory=True, **kw), 6))
    halves = [take(pipeline.train_dataset(src, process_index=p, process_count=2, **kw), 6)
              for p in (0, 1)]
    assert_same(one, [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)])


def test_variable_shape_examples_are_cropped_then_batched(window_op):
    src = make_ragged_source()
    ds = pipeline.train_dataset(src, global_batch_size=8, preprocess="random_window(5)", seed=0)
    for b in take(ds, 10):  # two epochs
        assert b["image"].shape == (8, 5, 5, 1) and b["image"].dtype == np.uint8
        for img, label, (y, x) in zip(b["image"], b["label"], b["offset"]):
            np.testing.assert_array_equal(img, src[label]["image"][y:y + 5, x:x + 5])
    with pytest.raises(DataError, match="feature 'image' has rows of different shapes"):
        next(iter(pipeline.train_dataset(src, global_batch_size=8, preprocess="to_float", seed=0)))


def test_iterator_state_resumes_a_per_example_stream(window_op):
    ds = pipeline.train_dataset(make_ragged_source(), global_batch_size=8,
                                preprocess="random_window(5)", seed=4)
    it = iter(ds)
    for _ in range(6):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = iter(ds)
    resumed.set_state(state)
    assert_same([next(resumed) for _ in range(3)], expected)


def test_per_example_op_after_a_batched_op_is_refused(window_op):
    with pytest.raises(ConfigError, match="per-example op 'random_window' comes after the batched op 'to_float'"):
        ops.parse("random_window(5)|to_float|flip_lr|random_window(3)")
    stages = ops.parse("random_window(5)|to_float|flip_lr")
    assert (len(stages.example), len(stages.batch)) == (1, 2)
    with pytest.raises(ConfigError, match="Valid per-example: .*random_window.*; batched: .*flip_lr, keep"):
        ops.parse("random_windw(5)")


def test_eval_batches_put_each_example_once_through_the_per_example_ops(window_op):
    src = make_ragged_source(18)
    batches = [list(pipeline.eval_batches(src, global_batch_size=8, preprocess="random_window(5)|to_float",
                                          process_index=p, process_count=2)) for p in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == 3
    for b in batches[0] + batches[1]:  # padding rows have the cropped shape too
        assert b["image"].shape == (4, 5, 5, 1) and b["image"].dtype == np.float32
    seen = np.concatenate([b["label"][b["mask"] > 0] for per in batches for b in per])
    assert sorted(seen) == list(range(18))
    assert batches[1][-1]["mask"].sum() == 0  # process 1's last rows are all padding
    alone = ops.apply("random_window(5)|to_float", src[17:18], first_position=17)
    last = batches[0][-1]  # example 17 is row 1 of process 0's last batch
    np.testing.assert_array_equal(last["image"][1], alone["image"][0])
