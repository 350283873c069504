"""GPT: shapes, exact parameter counts, causality, the KV cache, remat, dropout, overfitting."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from models import build_model
from models.decoding import init_cache

TINY = dict(vocab_size=32, num_layers=2, num_heads=4, width=32, max_len=24)


def init_params(model, tokens):
    """Unboxed float32 parameters, initialised under jit (much faster than op by op)."""
    return nn.unbox(jax.jit(lambda: model.init(jax.random.key(0), tokens, train=False))()["params"])


def count_params(model):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), train=False))
    return sum(x.size for x in jax.tree.leaves(nn.unbox(variables)["params"]))


def expected_params(vocab_size, num_layers, width, max_len, mlp_ratio=4, positions="learned",
                    tie_embeddings=False, **_):
    """Biases on every projection and LayerNorm, as in GPT-2."""
    d, m = width, mlp_ratio * width
    per_layer = (2 * 2 * d          # two LayerNorms
                 + 3 * (d * d + d)   # fused query, key, value
                 + (d * d + d)       # attention output
                 + (d * m + m) + (m * d + d))  # MLP
    return (vocab_size * d                                   # token embedding
            + (max_len * d if positions == "learned" else 0)
            + num_layers * per_layer
            + 2 * d                                          # final LayerNorm
            + (0 if tie_embeddings else d * vocab_size))     # head, no bias


@pytest.fixture(scope="module")
def params():
    """TINY parameters per position scheme (rotary has no position table)."""
    return {positions: init_params(build_model("gpt", **TINY, positions=positions),
                                   jnp.zeros((1, 8), jnp.int32))
            for positions in ("learned", "rotary")}


@pytest.mark.parametrize("positions,tie", [("learned", False), ("rotary", True), ("learned", True)])
def test_parameter_count_formula(positions, tie):
    config = dict(TINY, positions=positions, tie_embeddings=tie)
    assert count_params(build_model("gpt", **config)) == expected_params(**config)


def test_gpt2_small_parameter_count():
    # GPT-2 small (Radford et al. 2019), 124M; the exact count of the released checkpoint.
    model = build_model("gpt", vocab_size=50257, num_layers=12, num_heads=12, width=768,
                        max_len=1024, tie_embeddings=True)
    assert count_params(model) == 124_439_808


def test_every_parameter_has_logical_axes():
    model = build_model("gpt", **TINY)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), train=False))
    leaves = jax.tree.leaves(shapes["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(p, nn.Partitioned) and len(p.names) == p.value.ndim for p in leaves)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(shapes)))


@pytest.mark.parametrize("positions,tie", [("learned", False), ("rotary", True)])
def test_output_shape(params, positions, tie):
    model = build_model("gpt", **TINY, positions=positions, tie_embeddings=tie, dtype="bfloat16")
    p = dict(params[positions])
    if tie:
        p.pop("head")
    logits = jax.jit(lambda p, t: model.apply({"params": p}, t, train=False))(p, jnp.ones((3, 11), jnp.int32))
    assert logits.shape == (3, 11, 32) and logits.dtype == jnp.float32


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal(params, positions):
    model = build_model("gpt", **TINY, positions=positions)
    apply = jax.jit(lambda t: model.apply({"params": params[positions]}, t, train=False))
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 32)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 32)
    a, b = apply(tokens), apply(changed)
    assert jnp.array_equal(a[:, :9], b[:, :9])
    assert not jnp.allclose(a[:, 9:], b[:, 9:])


def test_dropout_only_when_training(params):
    model = build_model("gpt", **TINY, dropout=0.5)
    tokens = jnp.ones((2, 8), jnp.int32)
    apply = jax.jit(lambda rng, train: model.apply(
        {"params": params["learned"]}, tokens, train=train, rngs={"dropout": rng}), static_argnums=1)
    assert jnp.array_equal(apply(jax.random.key(0), False), apply(jax.random.key(1), False))
    assert not jnp.allclose(apply(jax.random.key(0), True), apply(jax.random.key(1), True))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_kv_cache_matches_full_recompute(params, positions):
    """Greedy decoding with the cache = recomputing the whole sequence at every step."""
    model = build_model("gpt", **TINY, positions=positions)
    p = params[positions]
    batch, prompt_len, steps = 2, 4, 16
    prompt = jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, 32)

    # Reference: the full forward pass over a fixed-length buffer; positions after t are
    # padding, invisible to position t by causality (tested above), so one compile serves.
    full = jax.jit(lambda t: model.apply({"params": p}, t, train=False))
    seq = jnp.zeros((batch, prompt_len + steps), jnp.int32).at[:, :prompt_len].set(prompt)
    ref_logits = []
    for t in range(prompt_len, prompt_len + steps):
        ref_logits.append(full(seq)[:, t - 1])  # (B, V)
        seq = seq.at[:, t].set(jnp.argmax(ref_logits[-1], axis=-1))

    decode = jax.jit(lambda cache, t: model.apply({"params": p, "cache": cache}, t, train=False,
                                                   decode=True, mutable=["cache"]))
    # Prefill token by token.
    cache = init_cache(model, batch)
    for i in range(prompt_len):
        logits, variables = decode(cache, prompt[:, i:i + 1])
        cache = variables["cache"]
    # Prefill in one call: the same logits and the same cache.
    prefill_logits, prefilled = decode(init_cache(model, batch), prompt)
    assert jnp.allclose(prefill_logits[:, -1], logits[:, -1], atol=1e-5)
    assert jax.tree.all(jax.tree.map(lambda a, b: jnp.allclose(a, b, atol=1e-5), prefilled["cache"], cache))

    tokens = []
    for t in range(steps):
        assert jnp.allclose(logits[:, -1], ref_logits[t], atol=1e-5)
        tokens.append(jnp.argmax(logits[:, -1], axis=-1))  # (B,)
        logits, variables = decode(cache, tokens[-1][:, None])
        cache = variables["cache"]
    assert jnp.array_equal(jnp.stack(tokens, axis=1), seq[:, prompt_len:])
    assert int(cache["cache_index"]) == prompt_len + steps


def test_remat_gives_the_same_gradients(params):
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 32)

    def grads(remat):
        model = build_model("gpt", **TINY, remat=remat)
        return jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, tokens, train=False) ** 2)))(
            params["learned"])

    plain, remat = grads(False), grads(True)
    assert jax.tree.structure(plain) == jax.tree.structure(remat)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        assert jnp.allclose(a, b, atol=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="max_len"):
        build_model("gpt", **TINY).init(jax.random.key(0), jnp.zeros((1, 25), jnp.int32), train=False)
    with pytest.raises(ValueError, match="Valid: learned, rotary"):
        build_model("gpt", **TINY, positions="alibi").init(
            jax.random.key(0), jnp.zeros((1, 8), jnp.int32), train=False)


def test_overfits_one_batch(params):
    tokens = jax.random.randint(jax.random.key(0), (4, 16), 0, 32)
    model = build_model("gpt", **TINY)
    tx = optax.adam(1e-2)

    def loss_fn(p):
        logits = model.apply({"params": p}, tokens[:, :-1], train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    @jax.jit
    def step(p, opt_state):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    p = params["learned"]
    opt_state = tx.init(p)
    losses = []
    for _ in range(60):
        p, opt_state, loss = step(p, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0] or losses[-1] < 0.1, losses


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("remat", [False, True])
def test_scan_layers_is_the_same_function_on_stacked_parameters(params, remat):
    """scan_layers=True with the per-layer parameters stacked gives the unscanned model's
    logits, gradients and cached decoding; the layouts convert both ways."""
    from flax import traverse_util
    from models.layers import stack_layers, unstack_layers
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 32)
    plain = build_model("gpt", **TINY, remat=remat)
    scanned = build_model("gpt", **TINY, remat=remat, scan_layers=True)
    flat = traverse_util.flatten_dict(params["learned"], sep="/")
    stacked = traverse_util.unflatten_dict(stack_layers(flat), sep="/")
    fresh = nn.unbox(scanned.init(jax.random.key(0), tokens, train=False)["params"])
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, fresh)
    assert set(unstack_layers(traverse_util.flatten_dict(stacked, sep="/"))) == set(flat)

    def loss(model):
        return lambda p: jnp.sum(model.apply({"params": p}, tokens, train=False) ** 2)

    assert jnp.allclose(plain.apply({"params": params["learned"]}, tokens, train=False),
                        scanned.apply({"params": stacked}, tokens, train=False), atol=1e-5)
    segments = jnp.array([[1] * 5 + [2] * 7, [1] * 12])                 # (2, 12): packed rows
    positions = jnp.array([list(range(5)) + list(range(7)), list(range(12))])
    packed = dict(train=False, segmentation=segments, segment_positions=positions)
    assert jnp.allclose(plain.apply({"params": params["learned"]}, tokens, **packed),
                        scanned.apply({"params": stacked}, tokens, **packed), atol=1e-5)
    g_plain = traverse_util.flatten_dict(jax.grad(loss(plain))(params["learned"]), sep="/")
    g_scan = unstack_layers(traverse_util.flatten_dict(jax.grad(loss(scanned))(stacked), sep="/"))
    for k, g in g_plain.items():
        assert jnp.allclose(g, g_scan[k], atol=1e-5), k

    def decode(model, p):
        cache = init_cache(model, 2)
        logits, upd = model.apply({"params": p, "cache": cache}, tokens[:, :8], train=False,
                                  decode=True, mutable=["cache"])
        return model.apply({"params": p, "cache": upd["cache"]}, tokens[:, 8:9], train=False,
                           decode=True, mutable=["cache"])[0]

    assert jnp.allclose(decode(plain, params["learned"]), decode(scanned, stacked), atol=1e-5)


def test_init_from_converts_between_layer_layouts(params):
    """A scan_layers run starts from an unscanned checkpoint (and the reverse): the
    parameters are stacked or unstacked to the target's layout and all match."""
    from train.init_from import merge_params
    tokens = jnp.zeros((1, 8), jnp.int32)
    scanned = build_model("gpt", **TINY, scan_layers=True)
    fresh = nn.unbox(scanned.init(jax.random.key(5), tokens, train=False)["params"])
    merged, report = merge_params(fresh, params["learned"], strict=True)
    assert not any(report.values())
    assert jnp.array_equal(merged["blocks"]["mlp_in"]["kernel"][1],
                           params["learned"]["block_1"]["mlp_in"]["kernel"])
    back, report = merge_params(params["learned"], merged, strict=True)
    assert not any(report.values())
    assert jax.tree.all(jax.tree.map(jnp.array_equal, back, jax.device_get(params["learned"])))
