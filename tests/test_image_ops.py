"""Per-example image ops on real encoded bytes: decoding, Inception-style and central crops,
RandAugment; all keyed by stream position. Ends with a mock-ImageNet pipeline from TFDS
bytes to batches."""
import io

import numpy as np
import pytest
from PIL import Image

from data import image_ops, ops, pipeline, randaugment
from errors import DataError


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with gradients and noise: JPEG keeps it close, and every op changes it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * y / h, 255 * x / w, 128 + 60 * np.sin(x / 3.0)], -1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format=fmt)
    return buf.getvalue()


def test_decode_reads_png_exactly_and_jpeg_closely():
    img = smooth_image(20, 30)
    png = ops.apply("decode", [{"image": encode(img, "PNG")}])["image"]
    np.testing.assert_array_equal(png[0], img)
    data = encode(img, "JPEG")  # as TFDS's SkipDecoding gives it: a 0-d object array of bytes
    jpeg = ops.apply("decode", [{"image": np.array(data, dtype=object)}])["image"]
    assert jpeg.shape == (1, 20, 30, 3) and jpeg.dtype == np.uint8
    np.testing.assert_array_equal(jpeg[0], np.asarray(Image.open(io.BytesIO(data))))
    assert np.abs(jpeg[0].astype(int) - img).mean() < 10  # lossy, but the same picture
    gray = img[..., :1]
    np.testing.assert_array_equal(ops.apply("decode(1)", [{"image": encode(gray, "PNG")}])["image"][0], gray)
    assert ops.apply("decode(3)", [{"image": encode(gray, "PNG")}])["image"].shape == (1, 20, 30, 3)
    # An already decoded array passes through; bytes that are no image are a DataError.
    np.testing.assert_array_equal(ops.apply("decode", [{"image": img}])["image"][0], img)
    with pytest.raises(DataError, match="'image' is not an encoded image"):
        ops.apply("decode", [{"image": b"not an image"}])


def test_random_resized_crop_shapes_and_determinism_by_position():
    examples = [{"image": smooth_image(h, w, i)} for i, (h, w) in enumerate([(40, 60), (64, 30), (33, 33)] * 4)]
    spec = "random_resized_crop(16)"
    batch = ops.apply(spec, examples, seed=1)["image"]
    assert batch.shape == (12, 16, 16, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, ops.apply(spec, examples, seed=1)["image"])
    for r in (0, 5, 11):  # alone, at its position, a row is cropped the same way
        alone = ops.apply(spec, examples[r:r + 1], seed=1, first_position=r)["image"][0]
        np.testing.assert_array_equal(alone, batch[r])
    # Other positions (or seeds) crop differently.
    assert not np.array_equal(ops.apply(spec, examples, seed=1, first_position=12)["image"], batch)
    assert ops.apply("random_resized_crop((8, 12))", examples[:2])["image"].shape == (2, 8, 12, 3)


def test_inception_crop_box_respects_scale_and_ratio_and_falls_back_to_the_centre():
    u = ops.RowRandom(0, np.arange(500)).uniform(image_ops.CROP_ATTEMPTS, 4)
    fractions = []
    for draws in u:
        top, left, h, w = image_ops.inception_crop_box(100, 150, draws, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 150
        fractions.append(h * w / (100 * 150))
    assert 0.07 < min(fractions) and max(fractions) <= 1.0 and np.std(fractions) > 0.1
    # A scale no box can meet: the central crop with the aspect limit nearest the image's.
    top, left, h, w = image_ops.inception_crop_box(100, 300, u[0], (2.0, 3.0), (3 / 4, 4 / 3))
    assert (h, w) == (100, 133) and (top, left) == (0, 83)


def test_resize_small_then_central_crop():
    ex = [{"image": smooth_image(40, 60)}]
    assert ops.apply("resize_small(20)", ex)["image"].shape == (1, 20, 30, 3)
    out = ops.apply("resize_small(20)|central_crop(16)|normalize", ex)["image"]
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.float32
    with pytest.raises(DataError, match="central_crop\\(64, 64\\) got a 40x60 image"):
        ops.apply("central_crop(64)", ex)


def test_normalize_maps_the_imagenet_mean_to_zero():
    mean = np.round(255 * np.array(image_ops.IMAGENET_MEAN)).astype(np.uint8)  # (3,)
    out = ops.apply("normalize", [{"image": np.broadcast_to(mean, (2, 2, 3)).copy()}])["image"]
    assert np.abs(out).max() < 0.01
    white = ops.apply("normalize", [{"image": np.full((2, 2, 3), 255, np.uint8)}])["image"][0, 0, 0]
    np.testing.assert_allclose(white, (1 - np.array(image_ops.IMAGENET_MEAN)) / image_ops.IMAGENET_STD, rtol=1e-5)


def test_randaugment_changes_images_deterministically_per_position():
    examples = [{"image": smooth_image(24, 24, i)} for i in range(16)]
    out = ops.apply("randaugment(2, 10)", examples, seed=3)["image"]
    assert out.shape == (16, 24, 24, 3) and out.dtype == np.uint8
    changed = [not np.array_equal(o, ex["image"]) for o, ex in zip(out, examples)]
    assert sum(changed) >= 12
    np.testing.assert_array_equal(out, ops.apply("randaugment(2, 10)", examples, seed=3)["image"])
    alone = ops.apply("randaugment(2, 10)", examples[7:8], seed=3, first_position=7)["image"][0]
    np.testing.assert_array_equal(alone, out[7])
    assert not np.array_equal(out, ops.apply("randaugment(2, 10)", examples, seed=4)["image"])


@pytest.mark.parametrize("channels", [1, 3])
def test_every_randaugment_op_keeps_size_and_mode(channels):
    img = image_ops.to_pil(smooth_image(20, 28)[..., :channels])
    changed = 0
    for name, fn in randaugment.AUGMENTS.items():
        out = fn(img, 0.9, -1.0, np.array([0.5, 0.5]))
        assert out.size == img.size and out.mode == img.mode, name
        changed += not np.array_equal(np.asarray(out), np.asarray(img))
    assert changed >= 14  # all but, for grey images, Color (a no-op there)


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_mock_imagenet_bytes_to_batches(tfds_dir):
    """TFDS's mock ImageNet (JPEG bytes of varying sizes) through the data source path."""
    import tensorflow_datasets as tfds

    from data import sources
    from configs.common import base_config
    c = base_config().data
    c.update(dict(
        name="imagenet2012", data_dir=tfds_dir, train_split="train", eval_split="validation",
        preprocess="decode|random_resized_crop(16)|randaugment|flip_lr|normalize|"
                   "mixup(0.2, 1000)|keep('image', 'label')",
        eval_preprocess="decode|resize_small(18)|central_crop(16)|normalize|keep('image', 'label')"))
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        train, _ = sources.open_split(c, "train", c.preprocess)
        assert isinstance(train[0]["image"], bytes)  # left encoded for the `decode` op
        ds = pipeline.train_dataset(train, global_batch_size=8, preprocess=c.preprocess, seed=0)
        it = iter(ds)
        for _ in range(3):
            b = next(it)
            assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.float32
            assert b["label"].shape == (8, 1000)
            np.testing.assert_allclose(b["label"].sum(-1), 1.0, rtol=1e-5)
        evals, _ = sources.open_split(c, "validation", c.eval_preprocess)
        assert isinstance(evals[0]["image"], bytes)  # eval_preprocess decodes too
        batches = list(pipeline.eval_batches(evals, global_batch_size=8, preprocess=c.eval_preprocess))
        c.eval_preprocess = "resize_small(18)|central_crop(16)"  # no `decode`: TFDS decodes
        assert isinstance(sources.open_split(c, "validation", c.eval_preprocess)[0][0]["image"], np.ndarray)
    assert len(batches) == 3 and all(b["image"].shape == (8, 16, 16, 3) for b in batches)
    assert sum(b["mask"].sum() for b in batches) == 20


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_one_train_step_on_mock_imagenet_with_mixup(tmp_path):
    """The loop on decoded, cropped, mixed batches: soft labels reach the classification task."""
    import tensorflow_datasets as tfds

    from helpers import tiny_resnet_config
    from train import loop
    c = tiny_resnet_config(str(tmp_path / "tfds"), steps=2, checkpoint_every=2, log_every=1, eval_every=2)
    c.data.name, c.data.eval_split = "imagenet2012", "validation"
    c.model.num_classes = c.task.num_classes = 1000
    c.data.preprocess = ("decode|random_resized_crop(16)|flip_lr|normalize|mixup(0.2, 1000)|"
                         "keep('image', 'label')")
    c.data.eval_preprocess = "decode|resize_small(16)|central_crop(16)|normalize|keep('image', 'label')"
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        last = loop.train(c, str(tmp_path / "run"))
    assert np.isfinite(last["train/loss"]) and 0.0 <= last["train/accuracy"] <= 1.0
    assert 0.0 <= last["eval/accuracy"] <= 1.0


def test_a_chain_of_image_ops_equals_the_ops_one_at_a_time():
    """`chain` passes a Pillow image between consecutive image ops (image_ops.fuse); the
    output must be the pixels of applying each op alone, array to array, with the same draws."""
    spec = "decode|random_resized_crop(24)|randaugment(3, 9)|resize_small(20)|central_crop(18)"
    stages = ops.parse(spec)
    assert len(image_ops.fuse(stages.example)) == 1  # one Pillow image, one conversion
    rand = ops.RowRandom(5, np.arange(6), stream=ops.EXAMPLE_STREAM)
    for r in range(6):
        example = {"image": encode(smooth_image(40 + 3 * r, 50, r), "JPEG"), "label": r}
        fused = ops.chain(stages.example)(example, rand.row(r))
        one_by_one, row = example, rand.row(r)
        for op in stages.example:
            one_by_one = op(one_by_one, row)
            assert isinstance(one_by_one["image"], np.ndarray)
        assert isinstance(fused["image"], np.ndarray) and fused["image"].shape == (18, 18, 3)
        np.testing.assert_array_equal(fused["image"], one_by_one["image"])
        assert fused["label"] == r


@pytest.mark.parametrize("shape,dtype", [((6, 9, 11, 3), np.uint8), ((6, 9, 11, 1), np.uint8),
                                         ((6, 8, 8, 1), np.float32), ((6, 9, 11), np.uint8)])
def test_flip_lr_mirrors_the_rows_it_draws(shape, dtype):
    """Pillow mirrors uint8 images, numpy the rest: both are numpy's reversed width axis."""
    img = (np.random.default_rng(0).random(shape) * 255).astype(dtype)
    out = ops.flip_lr()({"image": img}, ops.RowRandom(1, np.arange(6)))["image"]
    flip = ops.RowRandom(1, np.arange(6)).uniform(1)[:, 0] < 0.5
    assert 0 < flip.sum() < 6 and out.dtype == img.dtype
    np.testing.assert_array_equal(out, np.where(flip.reshape(-1, *[1] * (img.ndim - 1)), img[:, :, ::-1], img))
