"""Attributions (train/limits/attributions.py): the mathematics each method promises."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.limits import attributions as attr


def mlp(seed=0, dim=64, hidden=32, classes=10):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    w1 = jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)
    w2 = jax.random.normal(k2, (hidden, classes)) / np.sqrt(hidden)
    b1 = jax.random.normal(k3, (hidden,))
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + b1[None]) @ w2


def inputs(shape=(6, 8, 8, 1), seed=1):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.uniform(k1, shape, minval=-1.0, maxval=1.0), jax.random.randint(k2, shape[:1], 0, 10)


def test_gradients_of_a_linear_model_are_its_weights():
    w = jax.random.normal(jax.random.PRNGKey(0), (64, 10))
    b = jnp.arange(10.0)
    fn = lambda x: x.reshape(x.shape[0], -1) @ w + b[None]  # noqa: E731
    x, targets = inputs()
    grads = attr.vanilla_gradients(fn, x, targets)
    assert grads.shape == x.shape
    np.testing.assert_allclose(grads.reshape(6, 64), w.T[targets], rtol=1e-6)
    # and Integrated Gradients of a linear model are exactly (x - baseline) * weights
    ig = attr.integrated_gradients(fn, x, targets, baseline=-jnp.ones_like(x), steps=3)
    np.testing.assert_allclose(ig.reshape(6, 64), (x.reshape(6, 64) + 1) * w.T[targets], rtol=1e-5)


def test_integrated_gradients_are_complete_for_a_smooth_model():
    fn = mlp()
    x, targets = inputs()
    for baseline in (jnp.zeros_like(x), jnp.full_like(x, -1.0)):
        ig = jax.jit(lambda x, t, b: attr.integrated_gradients(fn, x, t, baseline=b, steps=128))(
            x, targets, baseline)
        gap = attr.target_logits(fn, x, targets) - attr.target_logits(fn, baseline, targets)  # (B,)
        assert float(jnp.abs(gap).max()) > 0.2  # a real difference to account for
        np.testing.assert_allclose(ig.reshape(6, -1).sum(1), gap, atol=2e-4)
    # too few steps leave a visible gap: the test can fail
    coarse = attr.integrated_gradients(fn, x, targets, baseline=jnp.full_like(x, -1.0), steps=1)
    assert float(jnp.abs(coarse.reshape(6, -1).sum(1) - gap).max()) > 1e-3


def test_smoothgrad_with_sigma_zero_is_the_vanilla_gradient_and_noise_changes_it():
    fn = mlp()
    x, targets = inputs()
    vanilla = attr.vanilla_gradients(fn, x, targets)
    zero = attr.smoothgrad(fn, x, targets, jax.random.PRNGKey(0), samples=4, sigma=0.0)
    np.testing.assert_allclose(zero, vanilla, rtol=1e-6, atol=1e-7)
    noisy = attr.smoothgrad(fn, x, targets, jax.random.PRNGKey(0), samples=64, sigma=0.5)
    assert float(jnp.abs(noisy - vanilla).max()) > 1e-3
    # the mean of many noisy gradients: two seeds agree far better than single draws do
    other = attr.smoothgrad(fn, x, targets, jax.random.PRNGKey(1), samples=64, sigma=0.5)
    single = [attr.smoothgrad(fn, x, targets, jax.random.PRNGKey(k), samples=1, sigma=0.5) for k in (0, 1)]
    assert float(jnp.abs(noisy - other).mean()) < float(jnp.abs(single[0] - single[1]).mean()) / 3


def test_attention_rollout_closed_forms():
    """Identity attention: the identity. Uniform attention U (every entry 1/N), L layers,
    residual r: r^L I + (1 - r^L) U, since U I = U and U U = U."""
    b, h, n, layers = 2, 3, 5, 4
    eye = jnp.broadcast_to(jnp.eye(n), (b, h, n, n))
    np.testing.assert_allclose(attr.attention_rollout([eye] * layers), np.broadcast_to(np.eye(n), (b, n, n)),
                               atol=1e-6)
    uniform = jnp.full((b, h, n, n), 1.0 / n)
    for r in (0.5, 0.2):
        expected = r ** layers * np.eye(n) + (1 - r ** layers) * np.full((n, n), 1.0 / n)
        np.testing.assert_allclose(attr.attention_rollout([uniform] * layers, residual=r)[1], expected,
                                   atol=1e-6)
    # heads are averaged: one identity head and one uniform head = half of each, per layer
    mixed = jnp.concatenate([eye[:, :1], uniform[:, :1]], axis=1)
    one = 0.5 * np.eye(n) + 0.5 * (0.5 * np.eye(n) + 0.5 / n)
    np.testing.assert_allclose(attr.attention_rollout([mixed])[0], one, atol=1e-6)


def test_vit_sows_attention_without_changing_its_output():
    from models.vit import ViT
    model = ViT(variant="Ti/2", width=32, depth=3, num_heads=4, mlp_dim=64, pool="gap")
    x, _ = inputs()
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert set(variables) == {"params"}  # init collects no intermediates into the params
    plain = model.apply(variables, x, train=False)
    logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    np.testing.assert_array_equal(plain, logits)
    attentions = attr.sown_attention(state["intermediates"])
    assert len(attentions) == 3 and attentions[0].shape == (6, 4, 16, 16)
    rollout = attr.attention_rollout(attentions)
    np.testing.assert_allclose(rollout.sum(-1), np.ones((6, 16)), atol=1e-5)
    assert float(np.abs(np.asarray(rollout) - np.eye(16)).max()) > 1e-3  # not the identity


def test_token_attributions_of_a_model_linear_in_its_embeddings():
    """logits = sum_t W e_t (no bias): gradient x input and IG of token t are both
    W[target] . e_t, and they sum to the logit (zero embeddings give 0)."""
    import flax.linen as nn

    class Bag(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            e = nn.Embed(16, 8, name="embed")(tokens)  # (B, T, E)
            out = nn.Dense(16, use_bias=False, name="out")(jnp.cumsum(e, axis=1))
            return out  # (B, T, V): position t sees tokens <= t

    model = Bag()
    tokens = jnp.asarray([[1, 5, 3, 7], [2, 2, 9, 0]])
    variables = model.init(jax.random.PRNGKey(0), tokens)
    logits_fn = lambda t: model.apply(variables, t)  # noqa: E731
    target = jnp.asarray([4, 11])
    out = attr.token_attributions(logits_fn, tokens, target, steps=4)
    table, w = variables["params"]["embed"]["embedding"], variables["params"]["out"]["kernel"]
    expected = np.einsum("bte,eb->bt", np.asarray(table)[np.asarray(tokens)], np.asarray(w)[:, np.asarray(target)])
    np.testing.assert_allclose(out["grad_x_input"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["ig"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["ig"].sum(1), out["logit"] - out["baseline_logit"], rtol=1e-5)


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_token_attributions_of_a_gpt_are_complete():
    from models.gpt import GPT
    model = GPT(vocab_size=256, num_layers=2, num_heads=2, width=32, max_len=16, positions="rotary")
    tokens = jnp.asarray([list(b"def f(x):\n  re")])
    variables = model.init(jax.random.PRNGKey(0), tokens, train=False)
    logits_fn = lambda t: model.apply(variables, t, train=False)  # noqa: E731
    out = attr.token_attributions(logits_fn, tokens, jnp.asarray([116]), steps=256)
    change = float(out["logit"][0] - out["baseline_logit"][0])
    assert abs(float(out["ig"].sum()) - change) <= 0.01 * abs(change)
    assert out["grad_x_input"].shape == (1, tokens.shape[1])
    assert float(jnp.abs(out["grad_x_input"]).min()) > 0  # causal: every token is seen by the last
