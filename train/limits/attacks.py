"""Adversarial attacks in the model's input space: FGSM and PGD in L-inf and L2 balls.

Every function is pure, jittable and batched. The model is seen only as
`logits_fn(x) -> logits` (B, ...) -> (B, C); the caller decides which variables and which
mode it runs with. Adversarial inputs stay inside the budget ball around `x` and inside the
valid input range `bounds = (lo, hi)` of the model's inputs after preprocessing (Strata's
image configs feed [-1, 1], from `to_float(-1, 1)`).

Budgets (`eps`) and step sizes may be traced values, so one compiled attack serves every
budget; `steps` and `restarts` are Python ints (loop lengths).

References: Goodfellow et al. 2015 (FGSM); Madry et al. 2018 (PGD, step size 2.5 eps /
steps); Wong et al. 2020 (FGSM from a random start, for fast adversarial training).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from errors import UnknownNameError, unknown_name_message

LogitsFn = Callable[[jax.Array], jax.Array]   # (B, ...) -> (B, C)
Bounds = tuple[float, float]
NORMS = ("linf", "l2")
TINY = 1e-12


def check_norm(norm: str) -> None:
    """An UnknownNameError (one line) for a norm other than 'linf' or 'l2'."""
    if norm not in NORMS:
        raise UnknownNameError(unknown_name_message("attack norm", norm, list(NORMS)))


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
    """(B,) -> (B, 1, ..., 1), broadcastable against `like` (B, ...)."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def per_example_norm(v: jax.Array, norm: str) -> jax.Array:
    """(B, ...) -> (B,): the L-inf or L2 norm of each row."""
    flat = v.reshape(v.shape[0], -1).astype(jnp.float32)
    if norm == "linf":
        return jnp.max(jnp.abs(flat), axis=1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=1))


def project(delta: jax.Array, eps: jax.Array | float, norm: str) -> jax.Array:
    """The nearest point of the `norm` ball of radius `eps` to each row of `delta` (B, ...)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    scale = jnp.minimum(1.0, eps / jnp.maximum(per_example_norm(delta, "l2"), TINY))  # (B,)
    return delta * _rows(scale, delta)


def clip_to_ball(x_adv: jax.Array, x: jax.Array, eps, norm: str, bounds: Bounds) -> jax.Array:
    """`x_adv` moved into the ball around `x`, then into the valid range. Clipping to the
    range only shrinks each coordinate of the perturbation (x is inside the range), so the
    result lies in both sets."""
    delta = project(x_adv - x, eps, norm)
    return jnp.clip(x + delta, bounds[0], bounds[1])


def ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent step of unit `norm`: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / _rows(jnp.maximum(per_example_norm(grad, "l2"), TINY), grad)


def _losses(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """(B, C), (B,) -> (B,) cross-entropy in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def loss_logits_and_grad(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array):
    """Per-example losses (B,), logits (B, C) and the gradient of each example's loss with
    respect to its own input (B, ...) (the gradient of the summed loss; rows are
    independent when the model is, e.g. batch norm in eval mode)."""
    def total(x):
        logits = logits_fn(x)
        losses = _losses(logits, labels)
        return losses.sum(), (losses, logits)
    (_, (losses, logits)), grad = jax.value_and_grad(total, has_aux=True)(x)
    return losses, logits, grad


def fgsm(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, *, eps, norm: str = "linf",
         bounds: Bounds = (-1.0, 1.0)) -> jax.Array:
    """Fast gradient sign method: one step of size `eps` up the loss, (B, ...) -> (B, ...).

    L-inf: x + eps * sign(grad); L2 (the "fast gradient method"): x + eps * grad / ||grad||;
    then clipped to the valid range.
    """
    check_norm(norm)
    _, _, grad = loss_logits_and_grad(logits_fn, x, labels)
    return clip_to_ball(x + eps * ascent_direction(grad, norm), x, eps, norm, bounds)


def random_start(rng: jax.Array, x: jax.Array, eps, norm: str, bounds: Bounds) -> jax.Array:
    """A uniform random point of the ball around each row of `x`, clipped to the range."""
    if norm == "linf":
        delta = jax.random.uniform(rng, x.shape, jnp.float32, -1.0, 1.0) * eps
    else:
        k_dir, k_rad = jax.random.split(rng)
        direction = jax.random.normal(k_dir, x.shape, jnp.float32)
        direction = direction / _rows(jnp.maximum(per_example_norm(direction, "l2"), TINY), x)
        dim = x[0].size
        radius = eps * jax.random.uniform(k_rad, (x.shape[0],)) ** (1.0 / dim)  # (B,)
        delta = direction * _rows(radius, x)
    return jnp.clip(x + delta.astype(x.dtype), bounds[0], bounds[1])


def _stronger(new_wrong, new_loss, old_wrong, old_loss) -> jax.Array:
    """(B,) whether a candidate beats the best so far: misclassified beats classified
    correctly; within the same outcome, the higher loss wins."""
    return (new_wrong & ~old_wrong) | ((new_wrong == old_wrong) & (new_loss > old_loss))


def _keep(best, x, losses, logits, labels):
    """The best-so-far (x (B, ...), wrong (B,), loss (B,)) updated with candidate `x`."""
    best_x, best_wrong, best_loss = best
    wrong = jnp.argmax(logits, -1) != labels
    take = _stronger(wrong, losses, best_wrong, best_loss)  # (B,)
    return (jnp.where(_rows(take, x), x, best_x), jnp.where(take, wrong, best_wrong),
            jnp.where(take, losses, best_loss))


def pgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, rng: jax.Array, *, eps,
        steps: int, step_size, norm: str = "linf", bounds: Bounds = (-1.0, 1.0),
        random_init: bool = True, restarts: int = 1, keep_best: bool = True) -> jax.Array:
    """Projected gradient descent on the loss (ascent), (B, ...) -> (B, ...).

    Each restart starts at a random point of the ball (or at `x` without `random_init`) and
    takes `steps` steps of `step_size` (in the norm's units: L-inf per pixel, L2 per image),
    each projected back into the ball and the range. The result is, per example, the
    strongest candidate: any misclassified one before any classified correctly, then the
    higher loss. Candidates are every iterate (`keep_best`) or each restart's last one
    (adversarial training: Madry et al.); with one restart and not `keep_best`, the last
    iterate is returned without a further forward pass. With `steps=1, step_size=eps,
    random_init=False` this is FGSM.
    """
    check_norm(norm)
    if steps < 1 or restarts < 1:
        raise ValueError(f"pgd needs steps >= 1 and restarts >= 1, got {steps}, {restarts}.")

    def one_restart(key, best):
        x0 = random_start(key, x, eps, norm, bounds) if random_init else x

        def body(_, carry):
            xi, best = carry
            losses, logits, grad = loss_logits_and_grad(logits_fn, xi, labels)
            if keep_best:
                best = _keep(best, xi, losses, logits, labels)
            step = xi + step_size * ascent_direction(grad, norm).astype(xi.dtype)
            return jax.lax.stop_gradient(clip_to_ball(step, x, eps, norm, bounds)), best

        return jax.lax.fori_loop(0, steps, body, (x0, best))

    no_best = (x, jnp.zeros(x.shape[:1], bool), jnp.full(x.shape[:1], -jnp.inf, jnp.float32))
    if restarts == 1 and not keep_best:
        return one_restart(rng, no_best)[0]

    def restart(r, best):
        last, best = one_restart(jax.random.fold_in(rng, r), best)
        logits = logits_fn(last)
        return _keep(best, last, _losses(logits, labels), logits, labels)

    return jax.lax.fori_loop(0, restarts, restart, no_best)[0]


def default_step_size(eps, steps: int, relative: float = 0.0):
    """PGD's step: `relative * eps`, or Madry et al.'s 2.5 * eps / steps when `relative` is
    0 (enough to cross the ball and come back, whatever the number of steps)."""
    return eps * (relative or 2.5 / steps)


def correct(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array) -> jax.Array:
    """(B,) whether each example is classified correctly."""
    return jnp.argmax(logits_fn(x), -1) == labels


def robustness_sums(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, mask: jax.Array,
                    rng: jax.Array, budgets: jax.Array, *, norm: str, steps: int,
                    step_size: float = 0.0, restarts: int = 1,
                    random_init: bool = True, bounds: Bounds = (-1.0, 1.0)) -> dict[str, jax.Array]:
    """Masked counts of examples classified correctly, clean and under PGD at each budget.

    Args: x (B, ...), labels (B,), mask (B,) (1 = a real row), budgets (K,) in increasing
    order; `step_size` is relative to the budget (0 = 2.5 / steps).
    Returns {"clean": (), "robust": (K,), "count": ()}. An example counts as robust at a
    budget only if it is classified correctly clean and no attack at that or any smaller
    budget broke it: the smaller ball lies inside the larger one, so robust accuracy never
    increases with the budget.
    """
    clean = correct(logits_fn, x, labels)  # (B,)

    def per_budget(alive, inputs):
        eps, key = inputs
        x_adv = pgd(logits_fn, x, labels, key, eps=eps, steps=steps,
                    step_size=default_step_size(eps, steps, step_size), norm=norm, bounds=bounds,
                    random_init=random_init, restarts=restarts)
        alive = alive & correct(logits_fn, x_adv, labels)
        return alive, jnp.sum(alive * mask)

    keys = jax.random.split(rng, budgets.shape[0])
    _, robust = jax.lax.scan(per_budget, clean, (budgets.astype(jnp.float32), keys))
    return {"clean": jnp.sum(clean * mask), "robust": robust, "count": jnp.sum(mask)}
