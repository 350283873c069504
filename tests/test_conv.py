"""models/conv.py: the im2col path equals XLA's convolution, and Conv is nn.Conv's drop-in."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.conv import Conv, conv2d, im2col_conv


def _xla_conv(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("size,kernel,strides,padding", [
    (8, 3, 1, [(1, 1), (1, 1)]),
    (8, 3, 2, [(1, 1), (1, 1)]),
    (2, 3, 1, [(1, 1), (1, 1)]),
    (4, 1, 2, [(0, 0), (0, 0)]),
    (9, 7, 2, [(3, 3), (3, 3)]),
    (7, 3, 2, [(0, 1), (1, 0)]),   # asymmetric, as "SAME" gives for even strides
])
@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_im2col_matches_xla_values_and_gradients(size, kernel, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, size, size, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 6)), jnp.float32)
    s = (strides, strides)
    np.testing.assert_allclose(im2col_conv(x, k, s, padding), _xla_conv(x, k, s, padding), atol=1e-4, rtol=1e-5)
    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k, s, padding)))
    got = jax.grad(loss(im2col_conv), argnums=(0, 1))(x, k)
    want = jax.grad(loss(_xla_conv), argnums=(0, 1))(x, k)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-5)


def _primitives(fn, *args) -> set[str]:
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_cpu_uses_im2col_only_for_outputs_of_at_most_2x2():
    assert jax.default_backend() == "cpu"
    k = jnp.ones((3, 3, 4, 4))
    pad = [(1, 1), (1, 1)]
    tiny = _primitives(lambda x: conv2d(x, k, (1, 1), pad), jnp.ones((2, 2, 2, 4)))        # 2x2 out
    strided = _primitives(lambda x: conv2d(x, k, (2, 2), pad), jnp.ones((2, 4, 4, 4)))     # 2x2 out
    larger = _primitives(lambda x: conv2d(x, k, (1, 1), pad), jnp.ones((2, 3, 3, 4)))      # 3x3 out
    assert "conv_general_dilated" not in tiny | strided and "dot_general" in tiny & strided
    assert "conv_general_dilated" in larger


@pytest.mark.parametrize("size,kwargs", [
    (2, dict(features=6, kernel_size=(3, 3), padding=1, use_bias=False)),
    (4, dict(features=6, kernel_size=(3, 3), strides=2, padding="SAME")),
    (8, dict(features=6, kernel_size=(3, 3), strides=2, padding="SAME")),
    (8, dict(features=6, kernel_size=(1, 1), strides=2, padding="VALID", dtype=jnp.bfloat16)),
])
def test_conv_is_a_drop_in_for_flax_conv(size, kwargs):
    """Same parameter tree from the same key, same outputs: checkpoints are interchangeable."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, size, size, 5)), jnp.float32)
    ours = Conv(**kwargs).init(jax.random.key(0), x)
    flax_ = nn.Conv(**kwargs).init(jax.random.key(0), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), ours) == jax.tree.map(lambda a: (a.shape, a.dtype), flax_)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_)):
        np.testing.assert_array_equal(a, b)
    tol = 2e-2 if kwargs.get("dtype") == jnp.bfloat16 else 1e-5
    got, want = Conv(**kwargs).apply(ours, x), nn.Conv(**kwargs).apply(ours, x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol)
