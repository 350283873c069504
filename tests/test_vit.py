"""ViT: parameter counts against the published figures, shapes, names, remat, overfitting."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from models import build_model

TINY = dict(variant="Ti/2", width=32, depth=2, num_heads=4, mlp_dim=64)  # for 8x8 images


def init_params(model, x):
    """Unboxed float32 parameters, initialised under jit (much faster than op by op)."""
    return nn.unbox(jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()["params"])


def count_params(model, shape):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return sum(x.size for x in jax.tree.leaves(nn.unbox(variables)["params"]))


@pytest.mark.parametrize("variant,published", [
    ("B/16", 86_567_656),  # the paper's 86M; the exact figure as timm counts it
    ("S/16", 22_050_664),  # 22.1M in the DeiT and AugReg papers
])
def test_parameter_counts_match_published(variant, published):
    model = build_model("vit", variant=variant, num_classes=1000)
    assert abs(count_params(model, (1, 224, 224, 3)) - published) / published < 1e-3


@pytest.fixture(scope="module")
def tiny_params():
    """Parameters of the TINY ViT (class token, learned position embedding, 10 classes)."""
    return init_params(build_model("vit", **TINY), jnp.zeros((1, 8, 8, 1)))


def test_output_shape(tiny_params):
    model = build_model("vit", **TINY, dropout=0.1)
    x = jnp.ones((3, 8, 8, 1))
    logits = jax.jit(lambda p: model.apply({"params": p}, x, train=True,
                                           rngs={"dropout": jax.random.key(1)}))(tiny_params)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32


def test_average_pooling_and_fixed_position_embedding():
    model = build_model("vit", **TINY, num_classes=7, pool="gap", posemb="sincos2d")
    x = jnp.ones((3, 8, 8, 1))
    params = init_params(model, x)
    assert "cls" not in params and "pos_embed" not in params
    assert jax.jit(lambda p: model.apply({"params": p}, x, train=False))(params).shape == (3, 7)


def test_every_parameter_has_logical_axes():
    model = build_model("vit", **TINY)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), train=False))["params"]
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(p, nn.Partitioned) and len(p.names) == p.value.ndim for p in leaves)


def test_bfloat16_compute_keeps_float32_params_and_logits(tiny_params):
    model = build_model("vit", **TINY, dtype="bfloat16")
    x = jnp.ones((2, 8, 8, 1))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(shapes)))
    assert jax.jit(lambda p: model.apply({"params": p}, x, train=False))(tiny_params).dtype == jnp.float32


def test_unknown_variant_lists_valid_ones():
    model = build_model("vit", variant="M/16")
    with pytest.raises(ValueError, match="Valid: B, H, L, S, Ti"):
        model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)


def test_image_not_a_multiple_of_patch_is_an_error():
    with pytest.raises(ValueError, match="multiple of the patch"):
        build_model("vit", **TINY).init(jax.random.key(0), jnp.ones((1, 9, 9, 1)), train=False)


def test_remat_gives_the_same_gradients(tiny_params):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    # Nonzero head, so that gradients reach the blocks.
    params = {**tiny_params, "head": {**tiny_params["head"], "kernel": jax.random.normal(
        jax.random.key(1), tiny_params["head"]["kernel"].shape)}}

    def grads(remat):
        model = build_model("vit", **TINY, remat=remat)
        return jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, train=False) ** 2)))(params)

    plain, remat = grads(False), grads(True)
    assert jax.tree.structure(plain) == jax.tree.structure(remat)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        assert jnp.allclose(a, b, atol=1e-6)


def test_overfits_one_batch(tiny_params):
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (8,), 0, 10)
    model = build_model("vit", **TINY)
    params = tiny_params
    tx = optax.adam(3e-3)

    def loss_fn(p):
        logits = model.apply({"params": p}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, opt_state):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = tx.init(params)
    losses = []
    for _ in range(60):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0] or losses[-1] < 0.1, losses
