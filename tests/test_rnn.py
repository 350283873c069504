"""RNN: shapes, published parameter counts, decode == full sequence, overfitting one batch."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import build_model
from models.decoding import init_cache

CELLS = ["lstm", "gru"]


def count_params(model, x, **kwargs) -> int:
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **kwargs))
    return sum(v.size for v in jax.tree.leaves(nn.unbox(variables)["params"]))


@pytest.mark.parametrize("hidden,published", [(650, 20e6), (1500, 66e6)])
def test_parameter_counts_match_published(hidden, published):
    # Zaremba et al. 2014 PTB LSTMs (2 layers, 10k vocab, untied softmax), as tabulated in
    # Merity et al. 2017: "medium" 20M, "large" 66M (two significant figures).
    model = build_model("rnn", cell="lstm", num_layers=2, hidden=hidden, vocab_size=10000)
    assert abs(count_params(model, jnp.zeros((1, 4), jnp.int32)) - published) / published < 0.02


@pytest.mark.parametrize("cell", CELLS)
def test_every_parameter_has_logical_axes(cell):
    model = build_model("rnn", cell=cell, hidden=8, vocab_size=5)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32),
                                               train=False))["params"]
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)


def output_of(model, x):
    """The model's output (shape and dtype only) without running it."""
    return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_language_model_and_classifier(cell):
    tokens = jnp.ones((3, 7), jnp.int32)
    lm = build_model("rnn", cell=cell, num_layers=2, hidden=16, vocab_size=11)
    out = output_of(lm, tokens)
    assert out.shape == (3, 7, 11) and out.dtype == jnp.float32

    clf = build_model("rnn", cell=cell, num_layers=1, hidden=16, vocab_size=11, num_classes=4)
    assert output_of(clf, tokens).shape == (3, 4)

    clf = build_model("rnn", cell=cell, num_layers=2, hidden=16, num_classes=4, dtype="bfloat16")
    out = output_of(clf, jnp.ones((3, 7, 5)))
    assert out.shape == (3, 4) and out.dtype == jnp.float32


def test_unknown_cell_lists_valid_ones():
    model = build_model("rnn", cell="lstn", vocab_size=5)
    with pytest.raises(ValueError, match="Did you mean 'lstm'.*Valid: gru, lstm"):
        model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32), train=False)


def test_dropout_only_when_training():
    model = build_model("rnn", hidden=16, vocab_size=7, num_layers=2, dropout=0.5)
    tokens = jnp.arange(12).reshape(2, 6) % 7
    variables = model.init(jax.random.key(0), tokens, train=False)
    eval_a = model.apply(variables, tokens, train=False)
    eval_b = model.apply(variables, tokens, train=False)
    train = model.apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(eval_a, train)


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("cell", CELLS)
def test_decode_step_by_step_equals_full_sequence(cell):
    B, T, V = 2, 9, 13
    model = build_model("rnn", cell=cell, num_layers=2, hidden=24, vocab_size=V)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    params = model.init(jax.random.key(0), tokens, train=False)["params"]
    full = model.apply({"params": params}, tokens, train=False)  # (B, T, V)

    cache = model.init(jax.random.key(0), jnp.zeros((B, 32), jnp.int32), train=False,
                       decode=True)["cache"]
    assert all(float(jnp.abs(c).max()) == 0.0 for c in jax.tree.leaves(cache))  # fresh state
    assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, init_cache(model, B))

    @jax.jit
    def step(cache, tok):
        logits, upd = model.apply({"params": params, "cache": cache}, tok, train=False,
                                  decode=True, mutable=["cache"])
        return logits, upd["cache"]

    # A 4-token prefill, then one token at a time.
    logits, c = step(cache, tokens[:, :4])
    stepped = [logits]
    for t in range(4, T):
        logits, c = step(c, tokens[:, t:t + 1])
        stepped.append(logits)
    np.testing.assert_allclose(jnp.concatenate(stepped, axis=1), full, atol=1e-5, rtol=1e-5)


def _overfit(model, x, labels, steps=100):
    params = model.init(jax.random.key(0), x, train=False)["params"]
    opt = optax.adam(1e-2)

    def loss_fn(params):
        logits = model.apply({"params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    first = None
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        first = loss if first is None else first
    return float(first), float(loss_fn(params))


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_overfits_one_batch(cell):
    V = 10
    model = build_model("rnn", cell=cell, num_layers=2, hidden=32, vocab_size=V)
    seq = jax.random.randint(jax.random.key(2), (4, 13), 0, V)
    first, last = _overfit(model, seq[:, :-1], seq[:, 1:])
    assert first > 2.0 and last < 0.25, (first, last)  # chance is log(10) = 2.3


def test_digits_like_classification_overfits():
    # 8x8 digits read as 8 rows of 8 features.
    x = jax.random.uniform(jax.random.key(3), (16, 8, 8)) * 16.0
    labels = jnp.arange(16) % 10
    model = build_model("rnn", cell="gru", num_layers=1, hidden=32, num_classes=10)
    first, last = _overfit(model, x / 16.0, labels)
    assert first > 1.5 and last < 0.1, (first, last)
