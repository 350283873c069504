"""Gaussian diffusion arithmetic (DDPM, DDIM, classifier-free guidance) as pure functions.

No model here: a schedule is a dict of float32 arrays indexed by the timestep, and the
samplers take the model's noise prediction `eps` as an argument.

Timesteps run t = 0 .. num_steps - 1 (0-indexed as in Nichol & Dhariwal's code): x_t is
the image after t + 1 noising steps, q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
with abar_t = prod_{s <= t} (1 - beta_s), and "t = -1" means the clean image (abar = 1).
`t` may be a scalar or a (B,) int array; it broadcasts over the trailing image axes.

References: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021
(cosine schedule), Ho & Salimans 2022 (classifier-free guidance).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from errors import ConfigError

SCHEDULES = ("linear", "cosine")


def _betas(kind: str, num_steps: int) -> np.ndarray:
    if kind == "linear":
        if num_steps <= 20:  # beta_max = 20 / num_steps would reach 1
            raise ConfigError(f"the linear schedule needs num_steps > 20, got {num_steps}.")
        # DDPM's 1e-4 .. 0.02 over 1000 steps, rescaled so other lengths keep the same
        # total noise (Nichol & Dhariwal 2021, `get_named_beta_schedule`).
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if kind == "cosine":
        # abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008;
        # beta_t = 1 - abar(t+1)/abar(t), clipped at 0.999 to avoid a singularity at t = T.
        f = lambda t: math.cos((t / num_steps + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1.0 - f(i + 1) / f(i), 0.999) for i in range(num_steps)], np.float64)
    raise ConfigError(f"unknown noise schedule {kind!r}. Valid: {', '.join(SCHEDULES)}.")


def make_schedule(kind: str, num_steps: int) -> dict[str, jnp.ndarray]:
    """The noise schedule and every per-timestep coefficient the samplers use.

    Computed in float64 with numpy, stored as float32 arrays of shape (num_steps,).

    Args:
      kind: "linear" (Ho et al. 2020) or "cosine" (Nichol & Dhariwal 2021).
      num_steps: T, the number of diffusion steps.

    Returns:
      {"betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "log_alphas_cumprod",
       "sqrt_alphas_cumprod",
       "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
       "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
       "posterior_mean_coef1", "posterior_mean_coef2"}, where the posterior is
      q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance).
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}.")
    betas = _betas(kind, num_steps)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    out = {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "log_alphas_cumprod": np.log(abar),
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
        "posterior_variance": posterior_variance,
        # The variance is 0 at t = 0; take the log of the t = 1 value there instead.
        "posterior_log_variance_clipped": np.log(
            np.append(posterior_variance[1:2], posterior_variance[1:])
            if num_steps > 1 else np.ones(1)),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def _expand(v: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """A scalar or (B,) value shaped (B, 1, ..., 1) to combine with x (B, ...)."""
    v = jnp.broadcast_to(jnp.asarray(v), x.shape[:1])
    return v.reshape(x.shape[:1] + (1,) * (x.ndim - 1))


def _at(a: jnp.ndarray, t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """a[t] shaped (B, 1, ..., 1) to multiply x (B, ...); t is a scalar or (B,)."""
    return _expand(a[jnp.asarray(t)], x)


def q_sample(schedule: dict, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """x_t ~ q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    return (_at(schedule["sqrt_alphas_cumprod"], t, x0) * x0
            + _at(schedule["sqrt_one_minus_alphas_cumprod"], t, x0) * noise)


def predict_x0(schedule: dict, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    """x_0 implied by x_t and the noise: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return (_at(schedule["sqrt_recip_alphas_cumprod"], t, x_t) * x_t
            - _at(schedule["sqrt_recipm1_alphas_cumprod"], t, x_t) * eps)


def ddpm_step(schedule: dict, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray,
              noise: jnp.ndarray) -> jnp.ndarray:
    """One ancestral sampling step x_t -> x_{t-1} (Ho et al. 2020, algorithm 2).

    The mean is the posterior mean of q(x_{t-1} | x_t, x0) at the predicted x0 clipped to
    [-1, 1]; the variance is the posterior variance (DDPM's "fixed small" choice). No
    noise is added at t = 0, which returns the clipped x0 itself.

    Args:
      schedule: from `make_schedule`.
      x_t: (B, ...) current samples.
      t: scalar or (B,) int timesteps.
      eps: (B, ...) the model's noise prediction at (x_t, t).
      noise: (B, ...) standard normal noise.
    Returns:
      (B, ...) x_{t-1}.
    """
    x0 = jnp.clip(predict_x0(schedule, x_t, t, eps), -1.0, 1.0)
    mean = (_at(schedule["posterior_mean_coef1"], t, x_t) * x0
            + _at(schedule["posterior_mean_coef2"], t, x_t) * x_t)
    std = jnp.exp(0.5 * _at(schedule["posterior_log_variance_clipped"], t, x_t))
    nonzero = (_expand(t, x_t) > 0).astype(x_t.dtype)
    return mean + nonzero * std * noise


def ddim_step(schedule: dict, x_t: jnp.ndarray, t: jnp.ndarray, t_prev: jnp.ndarray,
              eps: jnp.ndarray, eta: float = 0.0, noise: jnp.ndarray | None = None) -> jnp.ndarray:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12).

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev). eta = 0
    is deterministic; eta = 1 with t_prev = t - 1 is the DDPM posterior variance. x0 is
    predicted and clipped to [-1, 1], and eps recomputed from the clipped x0 (as in
    Nichol & Dhariwal's code). t_prev = -1 steps to the clean image (abar_prev = 1).

    Args:
      schedule: from `make_schedule`.
      x_t: (B, ...) current samples.
      t, t_prev: scalar or (B,) int timesteps, t_prev < t (see `ddim_timesteps`).
      eps: (B, ...) the model's noise prediction at (x_t, t).
      eta: 0 for DDIM, 1 for DDPM-like stochasticity.
      noise: (B, ...) standard normal noise; may be None only when eta == 0.
    Returns:
      (B, ...) x_{t_prev}.
    """
    if noise is None and not (isinstance(eta, (int, float)) and eta == 0):
        raise ValueError("ddim_step needs noise when eta != 0.")
    # Coefficients come from the float64-computed schedule rather than 1 - abar in
    # float32, which loses most digits near t = 0.
    first = _expand(t_prev, x_t) < 0  # t_prev = -1: the clean image
    t_prev = jnp.maximum(t_prev, 0)
    abar_prev = jnp.where(first, 1.0, _at(schedule["alphas_cumprod"], t_prev, x_t))
    sqrt_1m = schedule["sqrt_one_minus_alphas_cumprod"]
    var_prev = jnp.where(first, 0.0, _at(sqrt_1m, t_prev, x_t) ** 2)  # 1 - abar_prev
    var_t = _at(sqrt_1m, t, x_t) ** 2  # 1 - abar_t
    log_ratio = _at(schedule["log_alphas_cumprod"], t, x_t) - jnp.where(
        first, 0.0, _at(schedule["log_alphas_cumprod"], t_prev, x_t))  # log(abar_t / abar_prev)
    sigma2 = eta**2 * var_prev / var_t * -jnp.expm1(log_ratio)

    x0 = jnp.clip(predict_x0(schedule, x_t, t, eps), -1.0, 1.0)
    eps = (_at(schedule["sqrt_recip_alphas_cumprod"], t, x_t) * x_t - x0) / _at(
        schedule["sqrt_recipm1_alphas_cumprod"], t, x_t)  # the noise the clipped x0 implies
    x_prev = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(var_prev - sigma2, 0.0)) * eps
    return x_prev if noise is None else x_prev + jnp.sqrt(sigma2) * noise


def ddim_timesteps(num_steps: int, num_sample_steps: int) -> jnp.ndarray:
    """The timesteps a `num_sample_steps` sampler visits, descending from T - 1 to 0.

    Evenly spaced over [0, T - 1] and rounded, so the first step starts from pure noise
    and the last lands on t = 0. Pair each with the next one as `t_prev`, and the last
    with -1:  ts = ddim_timesteps(1000, 50); t_prevs = jnp.append(ts[1:], -1).
    """
    if not 1 <= num_sample_steps <= num_steps:
        raise ConfigError(f"num_sample_steps must be in [1, {num_steps}], got {num_sample_steps}.")
    if num_sample_steps == 1:
        return jnp.array([num_steps - 1], jnp.int32)
    ts = np.floor(np.linspace(0, num_steps - 1, num_sample_steps) + 0.5).astype(np.int32)
    return jnp.asarray(ts[::-1])


def guided_eps(eps_cond: jnp.ndarray, eps_uncond: jnp.ndarray, scale: float) -> jnp.ndarray:
    """Classifier-free guidance: eps_uncond + scale * (eps_cond - eps_uncond).

    scale = 1 is the conditional model, scale = 0 the unconditional one, scale > 1
    guides harder. Ho & Salimans 2022 write (1 + w) eps_cond - w eps_uncond: scale = 1 + w.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)
