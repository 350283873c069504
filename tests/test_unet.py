"""UNet: shapes, parameter counts (published and counted by hand), labels matter, overfitting."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import build_model

TINY = dict(channels=16, num_groups=4, num_res_blocks=1, attention_resolutions=(4,))


def count_params(model, shape) -> int:
    B = shape[0]
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape),
                                                  jnp.zeros((B,), jnp.int32), train=False))
    return sum(v.size for v in jax.tree.leaves(nn.unbox(variables)["params"]))


def expected_params(in_ch, ch, mults, num_res_blocks, attn, size, num_classes=None) -> int:
    """The DDPM layout counted by hand, independently of the module code."""
    E = 4 * ch
    conv = lambda i, o, k=3: k * k * i * o + o  # noqa: E731
    res = lambda i, o: 2 * i + conv(i, o) + E * o + o + 2 * o + conv(o, o) + (i * o + o if i != o else 0)  # noqa: E731
    att = lambda c: 2 * c + 4 * (c * c + c)  # noqa: E731
    n = ch * E + E + E * E + E + (E * (num_classes + 1) if num_classes else 0) + conv(in_ch, ch)
    skips, c = [ch], ch
    for level, m in enumerate(mults):
        for _ in range(num_res_blocks):
            n += res(c, ch * m) + (att(ch * m) if size in attn else 0)
            c = ch * m
            skips.append(c)
        if level != len(mults) - 1:
            n += conv(c, c)
            skips.append(c)
            size //= 2
    n += 2 * res(c, c) + att(c)
    for level, m in reversed(list(enumerate(mults))):
        for _ in range(num_res_blocks + 1):
            n += res(c + skips.pop(), ch * m) + (att(ch * m) if size in attn else 0)
            c = ch * m
        if level != 0:
            n += conv(c, c)
            size *= 2
    return n + 2 * c + conv(c, in_ch)


def test_cifar10_parameter_count_matches_published():
    # Ho et al. 2020, appendix B: "Our CIFAR10 model has 35.7 million parameters".
    model = build_model("unet", channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                        attention_resolutions=(16,), dropout=0.1)
    n = count_params(model, (1, 32, 32, 3))
    print(f"DDPM CIFAR-10 U-Net: {n:,} parameters")
    assert n == expected_params(3, 128, (1, 2, 2, 2), 2, (16,), 32)
    assert abs(n - 35.7e6) / 35.7e6 < 0.005


@pytest.mark.parametrize("kwargs,shape", [
    (dict(), (1, 8, 8, 1)),
    (dict(num_classes=10, attention_resolutions=(4,)), (1, 8, 8, 1)),
    (dict(channels=32, channel_mults=(1, 2, 2), attention_resolutions=(16, 8)), (1, 32, 32, 3)),
])
def test_parameter_count_is_deterministic_and_counted(kwargs, shape):
    model = build_model("unet", **kwargs)
    n = count_params(model, shape)
    print(f"UNet{kwargs} on {shape[1:]}: {n:,} parameters")
    assert n == count_params(model, shape)
    full = dict(channels=64, channel_mults=(1, 2), num_res_blocks=2, attention_resolutions=(),
                num_classes=None) | kwargs
    assert n == expected_params(shape[-1], full["channels"], full["channel_mults"],
                                full["num_res_blocks"], full["attention_resolutions"], shape[1],
                                full["num_classes"])


def test_every_parameter_has_logical_axes():
    model = build_model("unet", num_classes=3, **TINY)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                                               jnp.zeros((1,)), train=False))["params"]
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)


def output_of(model, x, t, y=None, **kwargs):
    """The model's output (shape and dtype only) without running it."""
    return jax.eval_shape(lambda: model.init_with_output(
        {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, t, y, **kwargs)[0])


@pytest.mark.parametrize("shape,mults,attn", [
    ((2, 8, 8, 1), (1, 2), (4,)),
    ((2, 32, 32, 3), (1, 2, 2), (8,)),
    ((2, 32, 32, 3), (1, 2, 2, 2), (16,)),
])
def test_output_shape_equals_input_shape(shape, mults, attn):
    model = build_model("unet", channels=16, num_groups=4, num_res_blocks=1, channel_mults=mults,
                        attention_resolutions=attn, num_classes=10, dropout=0.1)
    x = jnp.zeros(shape)
    for t in (jnp.array([3, 999]), jnp.array([0.5, 999.0])):
        for y in (None, jnp.array([0, 9])):
            for train in (False, True):
                eps = output_of(model, x, t, y, train=train)
                assert eps.shape == shape and eps.dtype == jnp.float32


def test_bfloat16_compute_returns_float32():
    eps = output_of(build_model("unet", dtype="bfloat16", **TINY), jnp.zeros((2, 8, 8, 1)),
                    jnp.zeros((2,)), train=False)
    assert eps.shape == (2, 8, 8, 1) and eps.dtype == jnp.float32


def test_bad_configurations_are_clear_errors():
    x, t = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,))
    with pytest.raises(ValueError, match="never occur"):
        build_model("unet", attention_resolutions=(16,)).init(jax.random.key(0), x, t, train=False)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("unet", channel_mults=(1, 2, 2)).init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), t,
                                                          train=False)
    with pytest.raises(ValueError, match="num_classes is None"):
        build_model("unet").init(jax.random.key(0), x, t, jnp.zeros((1,), jnp.int32), train=False)


def test_class_label_changes_the_output():
    model = build_model("unet", num_classes=10, **TINY)
    # One image three times, with labels 0, 1 and the null label 10.
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 8, 8, 1)), (3, 8, 8, 1))
    t = jnp.full((3,), 10)
    # The output convs start at zero; give every parameter a random value so labels can show.
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, train=False))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: jnp.asarray(0.1 * rng.standard_normal(p.shape), jnp.float32),
                          nn.unbox(shapes))
    apply = jax.jit(lambda params, y: model.apply({"params": params}, x, t, y, train=False))
    out = apply(params, jnp.array([0, 1, 10]))
    assert float(jnp.abs(out[0] - out[1]).max()) > 1e-3
    np.testing.assert_allclose(out[2], apply(params, None)[0], atol=1e-6)  # None = null label


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_overfits_one_batch():
    model = build_model("unet", num_classes=10, **TINY)
    k0, k1 = jax.random.split(jax.random.key(0))
    x0 = jax.random.uniform(k0, (8, 8, 8, 1), minval=-1.0, maxval=1.0)
    noise = jax.random.normal(k1, x0.shape)
    t, y = jnp.full((8,), 100), jnp.arange(8)
    x_t = 0.8 * x0 + 0.6 * noise
    # An "rbg" key only to compile the initializers faster on CPU than threefry does.
    rng = jax.random.key(0, impl="rbg")
    params = jax.jit(lambda: model.init(rng, x_t, t, y, train=False)["params"])()
    opt = optax.adam(3e-3)

    def loss_fn(params):
        return jnp.mean((model.apply({"params": params}, x_t, t, y, train=False) - noise) ** 2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    for i in range(100):
        params, opt_state, loss = step(params, opt_state)
        first = loss if i == 0 else first
    assert float(first) > 0.8 and float(loss_fn(params)) < 0.05, (float(first), float(loss_fn(params)))
