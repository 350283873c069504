"""Diffusion arithmetic against closed forms computed independently in float64 numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.tasks import diffusion_math as dm

T = 1000
TS = [1, 10, 250, 500, 999]


def linear_abar(num_steps: int = T) -> tuple[np.ndarray, np.ndarray]:
    betas = np.linspace(1e-4, 0.02, num_steps) * 1000 / num_steps
    abar = np.ones(num_steps)
    for i in range(num_steps):
        abar[i] = (abar[i - 1] if i else 1.0) * (1.0 - betas[i])
    return betas, abar


def images(seed: int, shape=(4, 8, 8, 3)) -> tuple[np.ndarray, np.ndarray]:
    """x0 inside [-1, 1] (so clipping is a no-op) and its true noise."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.9, 0.9, shape), rng.standard_normal(shape)


def test_linear_schedule_is_ddpm_and_alphas_cumprod_is_the_product():
    betas, abar = linear_abar()
    s = dm.make_schedule("linear", T)
    assert all(v.shape == (T,) and v.dtype == jnp.float32 for v in s.values())
    np.testing.assert_allclose(s["betas"], betas, rtol=1e-6)
    np.testing.assert_allclose(s["alphas_cumprod"], abar, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(s["alphas_cumprod_prev"][1:], abar[:-1], rtol=1e-5, atol=1e-9)
    assert float(s["alphas_cumprod_prev"][0]) == 1.0
    # A shorter schedule keeps the same total noise (rescaled betas).
    short = dm.make_schedule("linear", 250)
    np.testing.assert_allclose(short["betas"], linear_abar(250)[0], rtol=1e-6)
    assert abs(float(short["alphas_cumprod"][-1]) - abar[-1]) < 1e-4


def test_cosine_schedule_matches_cos_squared():
    s = dm.make_schedule("cosine", T)
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    abar = f(np.arange(1, T + 1)) / f(0)  # x_t has taken t + 1 steps
    betas = np.asarray(s["betas"], np.float64)
    assert betas.max() <= 0.999 + 1e-7 and betas[-1] == pytest.approx(0.999)
    unclipped = betas < 0.999
    assert unclipped.sum() > 0.99 * T
    np.testing.assert_allclose(np.asarray(s["alphas_cumprod"])[unclipped], abar[unclipped],
                               rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(s["alphas_cumprod"], np.cumprod(1.0 - betas), rtol=1e-5, atol=1e-9)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid: linear, cosine"):
        dm.make_schedule("sigmoid", 10)
    with pytest.raises(ValueError, match="num_steps > 20"):
        dm.make_schedule("linear", 10)  # rescaled beta_max would be 2


@pytest.mark.parametrize("kind,num_steps", [("linear", 21), ("linear", T), ("cosine", 1),
                                            ("cosine", 10), ("cosine", T)])
def test_every_coefficient_is_finite(kind, num_steps):
    for name, v in dm.make_schedule(kind, num_steps).items():
        assert v.shape == (num_steps,) and bool(jnp.all(jnp.isfinite(v))), name


@pytest.mark.parametrize("t", TS)
def test_q_sample_closed_form_and_moments(t):
    s = dm.make_schedule("linear", T)
    _, abar = linear_abar()
    x0, eps = images(0)
    x_t = dm.q_sample(s, jnp.asarray(x0, jnp.float32), jnp.full((4,), t), jnp.asarray(eps, jnp.float32))
    np.testing.assert_allclose(x_t, np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * eps, atol=1e-5)
    # Moments over many noise draws: mean sqrt(abar) x0, variance 1 - abar.
    n = 100_000
    x0 = np.full((n, 1), 0.5)
    noise = jax.random.normal(jax.random.key(t), (n, 1))
    samples = np.asarray(dm.q_sample(s, jnp.asarray(x0, jnp.float32), t, noise))
    std = np.sqrt(1 - abar[t])
    assert abs(samples.mean() - np.sqrt(abar[t]) * 0.5) < 5 * std / np.sqrt(n)
    assert abs(samples.var() / (1 - abar[t]) - 1) < 0.02


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", TS)
def test_ddpm_step_is_the_true_posterior_given_the_true_noise(kind, t):
    s = dm.make_schedule(kind, T)
    betas = np.asarray(s["betas"], np.float64)
    abar = np.cumprod(1.0 - betas)
    x0, eps = images(1)
    x_t = np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * eps
    # q(x_{t-1} | x_t, x0), Ho et al. 2020 eqs. 6-7.
    mean = (np.sqrt(abar[t - 1]) * betas[t] / (1 - abar[t]) * x0
            + np.sqrt(1 - betas[t]) * (1 - abar[t - 1]) / (1 - abar[t]) * x_t)
    var = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]

    step = jax.jit(dm.ddpm_step)
    args = (s, jnp.asarray(x_t, jnp.float32), jnp.full((4,), t), jnp.asarray(eps, jnp.float32))
    got_mean = step(*args, jnp.zeros(x0.shape))
    got_std = step(*args, jnp.ones(x0.shape)) - got_mean
    np.testing.assert_allclose(got_mean, mean, atol=2e-5)
    np.testing.assert_allclose(got_std**2, np.broadcast_to(var, x0.shape), rtol=1e-3)


def test_ddpm_step_at_t0_returns_clipped_x0_without_noise():
    s = dm.make_schedule("linear", T)
    x0, eps = images(2)
    x_t = dm.q_sample(s, jnp.asarray(x0, jnp.float32), 0, jnp.asarray(eps, jnp.float32))
    out = dm.ddpm_step(s, x_t, jnp.zeros((4,), jnp.int32), jnp.asarray(eps, jnp.float32),
                       noise=100.0 * jnp.ones(x0.shape))
    np.testing.assert_allclose(out, x0, atol=1e-5)
    # Clipping: a prediction far outside [-1, 1] is pulled back.
    out = dm.ddpm_step(s, 10.0 * jnp.ones((1, 2)), 0, jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    np.testing.assert_allclose(out, jnp.ones((1, 2)))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", TS)
def test_ddim_deterministic_recovers_x0_and_stays_on_the_forward_marginal(kind, t):
    s = dm.make_schedule(kind, T)
    abar = np.cumprod(1.0 - np.asarray(s["betas"], np.float64))
    x0, eps = images(3)
    x_t = jnp.asarray(np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * eps, jnp.float32)
    eps32 = jnp.asarray(eps, jnp.float32)
    tol = 2e-6 / np.sqrt(abar[t])  # float32 error grows as x0 = x_t / sqrt(abar) - ...
    out = dm.ddim_step(s, x_t, t, -1, eps32)
    np.testing.assert_allclose(out, x0, atol=tol)
    np.testing.assert_array_equal(out, dm.ddim_step(s, x_t, t, -1, eps32))  # deterministic
    # Stepping to any t_prev with the true eps lands on q(x_{t_prev} | x0) with the same noise.
    t_prev = t // 2
    out = dm.ddim_step(s, x_t, jnp.full((4,), t), jnp.full((4,), t_prev), eps32)
    np.testing.assert_allclose(out, np.sqrt(abar[t_prev]) * x0 + np.sqrt(1 - abar[t_prev]) * eps,
                               atol=tol)


@pytest.mark.parametrize("t", TS)
def test_ddim_eta1_one_step_is_the_ddpm_posterior(t):
    s = dm.make_schedule("linear", T)
    x0, eps = images(4)
    x_t = dm.q_sample(s, jnp.asarray(x0, jnp.float32), t, jnp.asarray(eps, jnp.float32))
    eps32 = jnp.asarray(eps, jnp.float32)
    zeros, ones = jnp.zeros(x0.shape), jnp.ones(x0.shape)
    ddim_mean = dm.ddim_step(s, x_t, t, t - 1, eps32, eta=1.0, noise=zeros)
    ddim_std = dm.ddim_step(s, x_t, t, t - 1, eps32, eta=1.0, noise=ones) - ddim_mean
    ddpm_mean = dm.ddpm_step(s, x_t, t, eps32, zeros)
    ddpm_std = dm.ddpm_step(s, x_t, t, eps32, ones) - ddpm_mean
    np.testing.assert_allclose(ddim_mean, ddpm_mean, atol=1e-4)
    np.testing.assert_allclose(ddim_std, ddpm_std, rtol=1e-3)


def test_ddim_without_noise_needs_eta_zero():
    s = dm.make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="noise"):
        dm.ddim_step(s, jnp.zeros((1, 2)), 5, 4, jnp.zeros((1, 2)), eta=0.5)


@pytest.mark.parametrize("num_sample_steps", [1, 7, 50, 999, 1000])
def test_ddim_timesteps(num_sample_steps):
    ts = np.asarray(dm.ddim_timesteps(T, num_sample_steps))
    assert ts.shape == (num_sample_steps,) and ts[0] == T - 1
    assert np.all(np.diff(ts) < 0) and ts.min() >= 0
    if num_sample_steps > 1:
        assert ts[-1] == 0
    with pytest.raises(ValueError):
        dm.ddim_timesteps(T, T + 1)


def test_ddim_sampling_loop_from_true_noise_returns_x0():
    # With an oracle eps for one known x0, a 20-step DDIM chain ends on x0.
    s = dm.make_schedule("cosine", T)
    x0, eps = images(5, (2, 4, 4, 1))
    x0, eps = jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32)
    ts = dm.ddim_timesteps(T, 20)
    x = dm.q_sample(s, x0, ts[0], eps)
    for t, t_prev in zip(ts, jnp.append(ts[1:], -1)):
        oracle = (x - jnp.sqrt(s["alphas_cumprod"][t]) * x0) / jnp.sqrt(1 - s["alphas_cumprod"][t])
        x = dm.ddim_step(s, x, t, t_prev, oracle)
    np.testing.assert_allclose(x, x0, atol=1e-3)


def test_guided_eps():
    c, u = jnp.full((2, 3), 2.0), jnp.full((2, 3), 1.0)
    np.testing.assert_allclose(dm.guided_eps(c, u, 0.0), u)
    np.testing.assert_allclose(dm.guided_eps(c, u, 1.0), c)
    w = 3.0  # Ho & Salimans' (1 + w) eps_c - w eps_u is scale = 1 + w
    np.testing.assert_allclose(dm.guided_eps(c, u, 1.0 + w), (1 + w) * c - w * u)
