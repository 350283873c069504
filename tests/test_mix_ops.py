"""Mixup and CutMix: soft labels that sum to 1 and match the pixels mixed, pairs that do
not depend on how the batch is split, and classification's soft targets."""
import jax.numpy as jnp
import numpy as np
import pytest

from data import ops
from errors import ConfigError


def constant_images(n: int = 8, size: int = 6) -> list[dict]:
    """Image i is filled with the value i (class i): each pixel says where it came from."""
    return [{"image": np.full((size, size, 1), i, np.uint8), "label": np.int64(i)} for i in range(n)]


@pytest.mark.parametrize("op", ["mixup(0.4, 10)", "cutmix(1.0, 10)", "cutmix(1.0, 10)|mixup(0.4, 10)"])
def test_mixing_keeps_label_mass_and_is_the_same_however_the_batch_is_split(op):
    src = constant_images()
    batch = ops.apply(f"to_float|{op}", src, seed=2)
    assert batch["label"].shape == (8, 10) and batch["label"].dtype == np.float32
    np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-6)
    assert (batch["label"] >= 0).all() and batch["label"].max(-1).min() < 1  # every row mixed
    # Rows 2j and 2j+1 are partners: only their two classes appear.
    for r in range(8):
        assert set(np.flatnonzero(batch["label"][r])) <= {r, r ^ 1}
    halves = [ops.apply(f"to_float|{op}", src[i:i + 4], seed=2, first_position=i) for i in (0, 4)]
    for k in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), batch[k])


def test_mixup_weights_pixels_as_labels():
    src = constant_images()
    batch = ops.apply("to_float(0, 255)|mixup(0.4, 10)", src, seed=5)
    for r in range(8):
        lam = batch["label"][r, r]  # the weight of the row's own class
        np.testing.assert_allclose(batch["image"][r], lam * r + (1 - lam) * (r ^ 1), rtol=1e-5)


def test_cutmix_labels_are_the_fraction_of_pixels_kept():
    src = constant_images(8, size=10)
    batch = ops.apply("cutmix(1.0, 10)", src, seed=1)
    assert batch["image"].dtype == np.uint8
    for r in range(8):
        own = np.mean(batch["image"][r] == r)
        np.testing.assert_allclose(batch["label"][r, r], own, rtol=1e-6)
        assert set(np.unique(batch["image"][r])) <= {r, r ^ 1}


def test_mixing_needs_a_positive_alpha_and_classes():
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        ops.parse("mixup(0, 10)")


def test_classification_takes_soft_labels():
    from train.tasks.classification import Classification
    task = Classification(num_classes=4)
    logits = jnp.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5]])
    apply = lambda x: (logits, {})
    ids = jnp.array([0, 3])
    loss_ids, m_ids, _ = task.loss(apply, {"image": jnp.zeros(2), "label": ids}, None)
    onehot = jnp.eye(4)[ids]
    loss_soft, m_soft, _ = task.loss(apply, {"image": jnp.zeros(2), "label": onehot}, None)
    np.testing.assert_allclose(loss_soft, loss_ids, rtol=1e-6)
    assert float(m_soft["accuracy"]) == float(m_ids["accuracy"]) == 0.5
    # A mixed target is the mixture of the two cross-entropies.
    mixed = 0.7 * jnp.eye(4)[jnp.array([0, 2])] + 0.3 * jnp.eye(4)[jnp.array([1, 3])]
    loss_mixed, _, _ = task.loss(apply, {"image": jnp.zeros(2), "label": mixed}, None)
    logp = logits - jnp.log(jnp.sum(jnp.exp(logits), -1, keepdims=True))
    expected = -jnp.mean(0.7 * logp[jnp.arange(2), jnp.array([0, 2])] + 0.3 * logp[jnp.arange(2), jnp.array([1, 3])])
    np.testing.assert_allclose(loss_mixed, expected, rtol=1e-5)
    sums = task.eval_sums(apply, {"image": jnp.zeros(2), "label": mixed, "mask": jnp.ones(2)}, None)
    assert float(sums["accuracy"][0]) == 2.0  # argmax of the mixed labels: classes 0 and 2
