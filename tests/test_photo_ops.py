"""The recipes' image pipelines on real JPEG photos (scikit-learn's china.jpg and
flower.jpg, 427x640): shapes and value ranges at 224, determinism by stream position, and
the same global batches on 1 and 2 processes."""
import os

import numpy as np
import pytest

from data import ops, pipeline, image_ops

VIT_TRAIN = ("decode|random_resized_crop(224, scale=(0.05, 1.0))|randaugment(2, 10)|flip_lr|"
             "to_float(-1, 1)|keep('image', 'label')")
RESNET_TRAIN = "decode|random_resized_crop(224)|flip_lr|normalize|keep('image', 'label')"
EVAL = "decode|resize_small(256)|central_crop(224)|normalize|keep('image', 'label')"


@pytest.fixture(scope="module")
def photos() -> list[dict]:
    """Eight examples: the two photos' JPEG bytes, four times each, as TFDS leaves them."""
    import sklearn.datasets
    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    data = [open(os.path.join(folder, f), "rb").read() for f in ("china.jpg", "flower.jpg")]
    return [{"image": np.array(data[i % 2], dtype=object), "label": np.int64(i)} for i in range(8)]


def test_decode_matches_sklearn(photos):
    from sklearn.datasets import load_sample_images
    decoded = ops.apply("decode", photos[:2])["image"]
    assert decoded.shape == (2, 427, 640, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.stack(load_sample_images().images))


def test_train_and_eval_specs_at_224(photos):
    lo = (0 - np.array(image_ops.IMAGENET_MEAN)) / image_ops.IMAGENET_STD
    hi = (1 - np.array(image_ops.IMAGENET_MEAN)) / image_ops.IMAGENET_STD
    for spec in (RESNET_TRAIN, EVAL):
        x = ops.apply(spec, photos, seed=0)["image"]
        assert x.shape == (8, 224, 224, 3) and x.dtype == np.float32
        assert np.all(x >= lo - 1e-5) and np.all(x <= hi + 1e-5) and x.std() > 0.5
    vit = ops.apply(VIT_TRAIN, photos, seed=0)["image"]
    assert vit.shape == (8, 224, 224, 3) and vit.min() >= -1 and vit.max() <= 1
    # Eval is deterministic and the same for both copies of a photo; training crops differ.
    ev = ops.apply(EVAL, photos, seed=0)["image"]
    np.testing.assert_array_equal(ev[0], ev[2])
    assert not np.array_equal(vit[0], vit[2])


def test_augmentation_is_keyed_by_position(photos):
    batch = ops.apply(VIT_TRAIN, photos, seed=5, first_position=16)["image"]
    np.testing.assert_array_equal(batch, ops.apply(VIT_TRAIN, photos, seed=5, first_position=16)["image"])
    for r in (0, 3, 7):
        alone = ops.apply(VIT_TRAIN, photos[r:r + 1], seed=5, first_position=16 + r)["image"][0]
        np.testing.assert_array_equal(alone, batch[r])


def test_one_and_two_processes_see_the_same_global_batches(photos):
    spec = RESNET_TRAIN.replace("224", "64")  # the same ops, smaller crops
    one = iter(pipeline.train_dataset(photos, global_batch_size=4, preprocess=spec, seed=1))
    globals_ = [next(one) for _ in range(4)]
    two = [iter(pipeline.train_dataset(photos, global_batch_size=4, preprocess=spec, seed=1,
                                       process_index=p, process_count=2)) for p in (0, 1)]
    for b in range(2):
        for p in (0, 1):
            local = next(two[p])
            # process p holds rows 2p, 2p+1 of each global batch
            np.testing.assert_array_equal(local["image"], globals_[b]["image"][2 * p:2 * p + 2])
