"""Adversarial attacks (train/limits/attacks.py): the mathematics on models whose gradients
are known, the constraints, and the strength ordering on a trained logistic regression."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train.limits import attacks


def linear_model(seed=0, dim=64, classes=10):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    w = jax.random.normal(k1, (dim, classes))
    b = jax.random.normal(k2, (classes,))
    return w, b, (lambda x: x.reshape(x.shape[0], -1) @ w + b[None])


def mlp(seed=0, dim=64, hidden=32, classes=10):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    w1 = jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)
    w2 = jax.random.normal(k2, (hidden, classes)) / np.sqrt(hidden)
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def batch(seed=1, shape=(16, 64), classes=10):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.uniform(k1, shape, minval=-1.0, maxval=1.0)
    x = x.at[:, :4].set(1.0).at[:, 4:8].set(-1.0)  # pixels on the range's edges
    return x, jax.random.randint(k2, shape[:1], 0, classes)


@pytest.fixture(scope="module")
def logistic():
    """Multinomial logistic regression on sklearn's 1,797 digits in [-1, 1], 200 Adam steps
    (about a second): (logits_fn, x (N, 64), labels (N,))."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0 * 2.0 - 1.0, jnp.float32)
    y = jnp.asarray(digits.target)
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros((10,))}
    tx = optax.adam(0.05)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"][None], y).mean()

    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(loss)(p), s)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=200))(params)
    fn = lambda v: v @ params["w"] + params["b"][None]  # noqa: E731
    assert float(jnp.mean(attacks.correct(fn, x, y))) > 0.95
    return fn, x, y


def test_fgsm_on_a_linear_model_moves_each_pixel_by_eps_in_the_gradient_sign():
    w, b, fn = linear_model()
    x, labels = batch()
    eps = 0.1
    x_adv = attacks.fgsm(fn, x, labels, eps=eps, bounds=(-1.0, 1.0))
    # d CE / dx = (softmax(xW + b) - onehot(y)) W^T, computed by hand
    grad = (jax.nn.softmax(x @ w + b[None]) - jax.nn.one_hot(labels, 10)) @ w.T
    expected = np.clip(x + eps * np.sign(grad), -1.0, 1.0)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    inside = np.abs(np.asarray(x + eps * np.sign(grad))) <= 1.0
    moved = np.abs(np.asarray(x_adv - x))
    np.testing.assert_allclose(moved[inside], eps, atol=1e-6)  # exactly eps where not clipped
    assert not inside.all() and np.asarray(x_adv).min() >= -1.0 and np.asarray(x_adv).max() <= 1.0
    # and it raises every example's loss
    ce = lambda v: optax.softmax_cross_entropy_with_integer_labels(fn(v), labels)  # noqa: E731
    assert np.all(np.asarray(ce(x_adv)) > np.asarray(ce(x)))


def test_fgsm_l2_takes_one_step_of_length_eps_along_the_gradient():
    w, b, fn = linear_model()
    x, labels = batch()
    x = x * 0.5  # away from the edges: no clipping
    x_adv = attacks.fgsm(fn, x, labels, eps=0.5, norm="l2")
    grad = (jax.nn.softmax(x @ w + b[None]) - jax.nn.one_hot(labels, 10)) @ w.T
    unit = grad / jnp.linalg.norm(grad, axis=1, keepdims=True)
    np.testing.assert_allclose(x_adv, x + 0.5 * unit, atol=1e-5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.5)])
def test_pgd_never_leaves_the_ball_or_the_range(norm, eps):
    fn = mlp()
    x, labels = batch(shape=(32, 8, 8, 1))
    x_adv = attacks.pgd(fn, x, labels, jax.random.PRNGKey(0), eps=eps, steps=10,
                        step_size=eps,  # deliberately large steps: every one is projected
                        norm=norm, bounds=(-1.0, 1.0), restarts=2)
    assert x_adv.shape == x.shape
    dist = np.asarray(attacks.per_example_norm(x_adv - x, norm))
    assert dist.max() <= eps * (1 + 1e-5)
    assert dist.max() >= 0.9 * eps  # near the boundary (L2: less the clipped edges): a real attack
    assert float(x_adv.min()) >= -1.0 and float(x_adv.max()) <= 1.0
    start = attacks.random_start(jax.random.PRNGKey(1), x, eps, norm, (-1.0, 1.0))
    assert np.asarray(attacks.per_example_norm(start - x, norm)).max() <= eps * (1 + 1e-5)
    assert float(start.min()) >= -1.0 and float(start.max()) <= 1.0


def test_pgd_with_one_step_from_the_input_is_fgsm():
    fn = mlp()
    x, labels = batch()
    for norm in ("linf", "l2"):
        one = attacks.pgd(fn, x, labels, jax.random.PRNGKey(0), eps=0.2, steps=1, step_size=0.2,
                          norm=norm, random_init=False, keep_best=False)
        np.testing.assert_allclose(one, attacks.fgsm(fn, x, labels, eps=0.2, norm=norm), atol=1e-6)


def test_pgd_is_jittable_with_a_traced_budget_and_compiles_once():
    fn = mlp()
    x, labels = batch()
    traces = []

    @jax.jit
    def attack(x, labels, eps):
        traces.append(1)
        return attacks.pgd(fn, x, labels, jax.random.PRNGKey(0), eps=eps, steps=3,
                           step_size=attacks.default_step_size(eps, 3))
    a, b = attack(x, labels, 0.1), attack(x, labels, 0.2)
    assert len(traces) == 1
    assert float(jnp.abs(a - x).max()) <= 0.1 + 1e-6 < float(jnp.abs(b - x).max())


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model(logistic):
    fn, x, y = logistic
    ce = lambda v: optax.softmax_cross_entropy_with_integer_labels(fn(v), y)  # noqa: E731
    for eps in (0.05, 0.1, 0.2):
        x_fgsm = attacks.fgsm(fn, x, y, eps=eps)
        x_pgd = attacks.pgd(fn, x, y, jax.random.PRNGKey(0), eps=eps, steps=10,
                            step_size=attacks.default_step_size(eps, 10))
        acc_fgsm = float(jnp.mean(attacks.correct(fn, x_fgsm, y)))
        acc_pgd = float(jnp.mean(attacks.correct(fn, x_pgd, y)))
        assert acc_pgd <= acc_fgsm, (eps, acc_pgd, acc_fgsm)
        assert float(ce(x_pgd).mean()) >= float(ce(x_fgsm).mean())
    assert acc_pgd < 0.5 < float(jnp.mean(attacks.correct(fn, x, y)))  # eps 0.2 hurts


def test_restarts_keep_the_worst_case_per_example(logistic):
    fn, x, y = logistic
    kw = dict(eps=0.05, steps=5, step_size=0.025, norm="linf")
    one = attacks.correct(fn, attacks.pgd(fn, x, y, jax.random.PRNGKey(3), restarts=1, **kw), y)
    four = attacks.correct(fn, attacks.pgd(fn, x, y, jax.random.PRNGKey(3), restarts=4, **kw), y)
    # restart 0 is the same in both: whatever one restart broke, four restarts break too
    assert not np.any(np.asarray(four & ~one))
    assert int(jnp.sum(four)) <= int(jnp.sum(one))


def test_robust_accuracy_is_non_increasing_in_the_budget(logistic):
    fn, x, y = logistic
    mask = jnp.ones(y.shape, jnp.float32).at[-97:].set(0.0)  # padded rows do not count
    budgets = jnp.array([0.0, 0.02, 0.05, 0.1, 0.2, 1.0])
    for norm, scale in (("linf", 1.0), ("l2", 8.0)):
        sums = jax.jit(partial(attacks.robustness_sums, fn, norm=norm, steps=5))(
            x, y, mask, jax.random.PRNGKey(0), budgets * scale)
        clean, robust = float(sums["clean"]), np.asarray(sums["robust"])
        assert float(sums["count"]) == 1700
        assert np.all(np.diff(robust) <= 0), robust
        assert robust[0] == clean  # no budget, no attack
        assert robust[-1] == 0 < robust[2] < clean  # the whole range breaks everything
        # each budget agrees with a plain PGD at that budget, up to the smaller budgets' breaks
        eps = float(budgets[3] * scale)
        alone = attacks.correct(fn, attacks.pgd(fn, x, y, jax.random.PRNGKey(9), eps=eps, steps=5,
                                                step_size=attacks.default_step_size(eps, 5),
                                                norm=norm), y)
        assert robust[3] <= float(jnp.sum(alone * mask)) + 0.01 * 1700


def test_unknown_norm_is_one_line():
    from errors import UnknownNameError
    fn = mlp()
    x, labels = batch()
    with pytest.raises(UnknownNameError, match="unknown attack norm 'l3'.*Valid: l2, linf"):
        attacks.fgsm(fn, x, labels, eps=0.1, norm="l3")
