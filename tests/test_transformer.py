"""Encoder-decoder Transformer: shapes, the base parameter count, causality, padding and
segment masking, cached decoding == teacher forcing, overfitting one batch."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from errors import ConfigError
from models import build_model

TINY = dict(vocab_size=20, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=16,
            dropout=0.0)
B, S, T = 2, 7, 6


def tokens(seed: int, shape: tuple[int, int]) -> jnp.ndarray:
    return jax.random.randint(jax.random.key(seed), shape, 1, TINY["vocab_size"])  # no padding


@pytest.fixture(scope="module", params=[False, True], ids=["post_ln", "pre_ln"])
def tiny(request):
    model = build_model("transformer", **TINY, pre_ln=request.param)
    inputs, targets = tokens(1, (B, S)), tokens(2, (B, T))
    params = jax.jit(lambda: model.init(jax.random.key(0), inputs, targets, train=False))()["params"]
    apply = jax.jit(lambda i, t, **kw: model.apply({"params": params}, i, t, train=False, **kw))
    return model, params, apply


def test_output_shapes_and_encode(tiny):
    model, params, apply = tiny
    inputs, targets = tokens(1, (B, S)), tokens(2, (B, T))
    logits = apply(inputs, targets)
    assert logits.shape == (B, T, TINY["vocab_size"]) and logits.dtype == jnp.float32
    encoded = model.apply({"params": params}, inputs, train=False, method="encode")
    assert encoded.shape == (B, S, TINY["width"])
    again = model.apply({"params": params}, encoded, inputs, targets, train=False, method="decode")
    np.testing.assert_allclose(again, logits, atol=1e-5)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_base_parameter_count(pre_ln):
    """The paper's "base" with a shared 37000-token vocabulary: 63.0M parameters."""
    V, E, M, L = 37000, 512, 2048, 6
    attention = 4 * E * E                      # query, key, value, output; no biases
    mlp = E * M + M + M * E + E
    norm = 2 * E
    encoder_layer = attention + mlp + 2 * norm
    decoder_layer = 2 * attention + mlp + 3 * norm
    expected = V * E + L * (encoder_layer + decoder_layer) + (2 * norm if pre_ln else 0)

    model = build_model("transformer", vocab_size=V, pre_ln=pre_ln)
    x = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x, train=False))
    params = nn.unbox(shapes)["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == expected
    if not pre_ln:  # the paper's Table 3 rounds its base model to 65M
        assert expected == 63_045_632
    base = (model.num_layers, model.width, model.num_heads, model.mlp_dim, model.dropout)
    assert base == (6, 512, 8, 2048, 0.1)


def test_parameters_carry_logical_axis_names():
    model = build_model("transformer", **TINY)
    x = jnp.ones((1, 4), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x, train=False))["params"]
    names = {jax.tree_util.keystr(p): leaf.names for p, leaf in jax.tree_util.tree_leaves_with_path(
        boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))}
    assert names["['embed']['embedding']"] == ("vocab", "embed")
    assert names["['decoder_0']['cross_attn']['query']['kernel']"] == ("embed", "heads", "kv")
    assert names["['encoder_1']['mlp_in']['kernel']"] == ("embed", "mlp")
    assert all(n for n in names.values()) and len(names) == len(jax.tree.leaves(nn.unbox(boxed)))


def test_decoder_is_causal(tiny):
    _, _, apply = tiny
    inputs, targets = tokens(1, (B, S)), tokens(2, (B, T))
    t = 3
    changed = targets.at[:, t].set((targets[:, t] % (TINY["vocab_size"] - 1)) + 1)
    a, b = apply(inputs, targets), apply(inputs, changed)
    np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1])  # logits[t] predicts targets[t]
    assert not np.allclose(a[:, t + 1], b[:, t + 1])


def test_padding_is_invisible(tiny):
    _, _, apply = tiny
    inputs, targets = tokens(1, (B, S)), tokens(2, (B, T))
    padded_inputs = jnp.pad(inputs, ((0, 0), (0, 3)))    # 0 = padding
    padded_targets = jnp.pad(targets, ((0, 0), (0, 2)))
    np.testing.assert_allclose(apply(padded_inputs, padded_targets)[:, :T], apply(inputs, targets),
                               atol=1e-5)


def test_packed_segments_do_not_see_each_other(tiny):
    """Two examples packed in one row give the logits each gets alone, and changing one
    example's tokens leaves the other's logits untouched."""
    _, _, apply = tiny
    (i1, i2), (t1, t2) = tokens(3, (2, 4)), tokens(4, (2, 3))
    inputs = jnp.concatenate([i1, i2[:3], jnp.zeros(1, jnp.int32)])[None]   # (1, 8): 4 + 3 + pad
    targets = jnp.concatenate([t1, t2, jnp.zeros(1, jnp.int32)])[None]      # (1, 7): 3 + 3 + pad
    packing = dict(inputs_segmentation=jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 0]]),
                   targets_segmentation=jnp.asarray([[1, 1, 1, 2, 2, 2, 0]]),
                   inputs_positions=jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 0]]),
                   targets_positions=jnp.asarray([[0, 1, 2, 0, 1, 2, 0]]))
    packed = apply(inputs, targets, **packing)
    np.testing.assert_allclose(packed[0, :3], apply(i1[None], t1[None])[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 3:6], apply(i2[None, :3], t2[None])[0], atol=1e-5)

    other = apply(inputs.at[0, 4:7].set(inputs[0, 4:7] % 19 + 1),
                  targets.at[0, 3:6].set(targets[0, 3:6] % 19 + 1), **packing)
    np.testing.assert_array_equal(other[0, :3], packed[0, :3])
    assert not np.allclose(other[0, 3:6], packed[0, 3:6])


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_cached_decoding_equals_teacher_forcing(tiny):
    """Feeding 0 then targets[:, :-1] one token at a time through the cache gives the
    logits of the full teacher-forced pass, the source padded on one row."""
    model, params, apply = tiny
    inputs = tokens(1, (B, S)).at[1, 5:].set(0)
    targets = tokens(2, (B, T))
    full = apply(inputs, targets)
    encoded = model.apply({"params": params}, inputs, train=False, method="encode")
    cache = model.init(jax.random.key(0), encoded, inputs, jnp.zeros((B, TINY["max_len"]), jnp.int32),
                       train=False, decode=True, method="decode")["cache"]
    assert all(float(jnp.abs(c).max()) == 0 for c in jax.tree.leaves(cache))

    @jax.jit
    def step(cache, token):
        logits, upd = model.apply({"params": params, "cache": cache}, encoded, inputs, token,
                                  train=False, decode=True, method="decode", mutable=["cache"])
        return logits, upd["cache"]

    fed = jnp.concatenate([jnp.zeros((B, 1), jnp.int32), targets[:, :-1]], axis=1)  # (B, T)
    for t in range(T):
        logits, cache = step(cache, fed[:, t:t + 1])
        np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5)
    assert int(cache["decode_index"]["index"]) == T


def test_dropout_only_in_training():
    model = build_model("transformer", **{**TINY, "dropout": 0.5})
    inputs, targets = tokens(1, (B, S)), tokens(2, (B, T))
    variables = model.init(jax.random.key(0), inputs, targets, train=False)
    a = model.apply(variables, inputs, targets, train=False)
    np.testing.assert_array_equal(a, model.apply(variables, inputs, targets, train=False))
    trained = model.apply(variables, inputs, targets, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, trained)


def test_overfits_one_batch_and_compiles_once():
    model = build_model("transformer", **TINY)
    inputs, targets = tokens(1, (4, 8)), tokens(2, (4, 8))
    params = model.init(jax.random.key(0), inputs, targets, train=False)["params"]
    opt = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            logits = model.apply({"params": p}, inputs, targets, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    losses = []
    for _ in range(60):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 2.5 and losses[-1] < 0.1, losses[::10]
    assert step._cache_size() == 1


def test_bad_fields_are_config_errors():
    x = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ConfigError, match="divisible"):
        build_model("transformer", **{**TINY, "num_heads": 5}).init(jax.random.key(0), x, x, train=False)
    with pytest.raises(ConfigError, match="max_len"):
        long = jnp.ones((1, 17), jnp.int32)
        build_model("transformer", **TINY).init(jax.random.key(0), long, x, train=False)
