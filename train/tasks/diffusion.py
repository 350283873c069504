"""Diffusion: DDPM noise prediction, class-conditional with classifier-free guidance.

Training (Ho et al. 2020, L_simple): draw t ~ U{0..T-1} and noise ~ N(0, I), make
x_t = q_sample(x_0, t, noise), and regress the model's eps(x_t, t, y) on the noise (MSE).
With `cond_drop` > 0 the label is replaced by the null label (index `num_classes`) with
that probability, so one network is both the conditional and the unconditional model
(Ho & Salimans 2022). `num_classes = 0` trains an unconditional model (no labels).

Sampling runs the whole reverse chain in one jitted `lax.scan` over timesteps, all
classes in one batch; with guidance the conditional and unconditional halves run as one
batch of 2B and combine as eps_u + guidance * (eps_c - eps_u).

Evaluation: `eval_sums` gives the denoising loss at random t (seeded, so every eval
draws the same t); sample quality is the `sample_quality` evaluator's
(train/evaluators/sample_quality.py), which calls `generate`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError
from train import files
from train.tasks import diffusion_math as dm
from train.tasks.base import (ApplyFn, Batch, EvalSums, Metrics, SampleOutput, Task, TaskContext,
                              masked_mean_parts)

SAMPLERS = ("ddim", "ddpm")


@dataclasses.dataclass
class Diffusion(Task):
    """Fields (config.task.*).

    Attributes:
      input_key, label_key: the image (B, H, W, C) in [-1, 1] and its int label (B,).
      num_classes: labels 0..num_classes-1 (the model's null label is num_classes);
        0 = unconditional (the model then gets no labels and guidance does not apply).
      num_steps: T, training timesteps.
      schedule: noise schedule, "cosine" or "linear".
      cond_drop: probability a training label becomes the null label.

    Sampling settings (sampler, steps, eta, guidance, grid size) are `config.sample.*`.
    """
    input_key: str = "image"
    label_key: str = "label"
    num_classes: int = 10
    num_steps: int = 1000
    schedule: str = "cosine"
    cond_drop: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.cond_drop < 1.0:
            raise ConfigError(f"task.cond_drop must be in [0, 1), got {self.cond_drop}.")
        self.coefficients = dm.make_schedule(self.schedule, self.num_steps)

    def check_sampling(self, settings: Any) -> None:
        """`config.sample.sampler` must be known and `sample.steps` in [1, num_steps]."""
        if settings.sampler not in SAMPLERS:
            raise ConfigError(f"unknown config.sample.sampler {settings.sampler!r}. "
                              f"Valid: {', '.join(SAMPLERS)}.")
        if settings.sampler == "ddim" and not 1 <= settings.steps <= self.num_steps:
            raise ConfigError(f"config.sample.steps must be in [1, task.num_steps={self.num_steps}], "
                              f"got {settings.steps}.")
        if settings.guidance < 0:
            raise ConfigError(f"config.sample.guidance must be >= 0, got {settings.guidance}.")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _labels(self, batch: Batch) -> tuple:
        return (batch[self.label_key].astype(jnp.int32),) if self.conditional else ()

    def init_args(self, batch: Batch):
        x = batch[self.input_key]
        return (x, jnp.zeros(x.shape[:1], jnp.int32), *self._labels(batch)), {}

    def _denoising_losses(self, apply: ApplyFn, batch: Batch, rng: jax.Array,
                          cond_drop: float) -> tuple[jax.Array, dict]:
        """Per-example MSE between the true and the predicted noise, (B,)."""
        x0 = batch[self.input_key].astype(jnp.float32)           # (B, H, W, C)
        B = x0.shape[0]
        t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
        t = jax.random.randint(t_rng, (B,), 0, self.num_steps)   # (B,)
        noise = jax.random.normal(noise_rng, x0.shape)
        x_t = dm.q_sample(self.coefficients, x0, t, noise)
        labels = self._labels(batch)
        if labels and cond_drop > 0:
            drop = jax.random.bernoulli(drop_rng, cond_drop, (B,))
            labels = (jnp.where(drop, self.num_classes, labels[0]),)
        eps, new_state = apply(x_t, t, *labels)
        return jnp.mean(jnp.square(eps - noise).reshape(B, -1), axis=1), new_state

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        losses, new_state = self._denoising_losses(apply, batch, rng, self.cond_drop)
        loss = losses.mean()
        return loss, {"loss": loss}, new_state

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        """The conditional denoising loss at random t (no label dropping)."""
        losses, _ = self._denoising_losses(apply, batch, rng, 0.0)
        return {"loss": masked_mean_parts(losses, batch["mask"])}

    # --- sampling ------------------------------------------------------------------

    def generate(self, ctx: TaskContext, labels: np.ndarray, settings: Any,
                 rng: jax.Array | None = None) -> np.ndarray:
        """Samples (N, H, W, C) in [-1, 1] for int `labels` (N,), with the sampler, steps,
        eta and guidance of `settings` (`config.sample`); `rng` defaults to `ctx.rng`."""
        self.check_sampling(settings)
        guidance = float(settings.guidance)
        shape = tuple(int(s) for s in ctx.data_info.features[self.input_key].shape)
        labels = np.asarray(labels, np.int32)
        n = len(labels)
        shards = _batch_shards(ctx.mesh)
        padded = np.concatenate([labels, np.zeros((-n) % shards, np.int32)])  # rows split evenly
        sharding = _batch_sharding(ctx.mesh)
        images = jitted_sample_loop(
            ctx.model, ctx.variables, self.coefficients, jax.device_put(padded, sharding),
            ctx.rng if rng is None else rng, jnp.float32(guidance), jnp.float32(settings.eta),
            shape=shape, sampler=settings.sampler, sample_steps=int(settings.steps),
            null_label=self.num_classes if self.conditional else None,
            guided=self.conditional and guidance != 1.0, sharding=sharding)
        if not images.is_fully_addressable:  # several processes: every one gets all rows
            from jax.experimental import multihost_utils
            images = multihost_utils.process_allgather(images, tiled=True)
        return np.asarray(jax.device_get(images))[:n]

    def sample(self, ctx: TaskContext, settings: Any) -> SampleOutput:
        """Writes a PNG grid (one row per class, `settings.per_class` columns) into the
        workdir and says where."""
        per_class = settings.per_class
        rows = self.num_classes if self.conditional else 1
        labels = np.repeat(np.arange(rows), per_class)
        samples = self.generate(ctx, labels, settings)
        steps = settings.steps if settings.sampler == "ddim" else self.num_steps
        name = f"samples_{settings.sampler}{steps}_guidance{settings.guidance:g}.png"
        path = os.path.join(ctx.workdir, name)
        if jax.process_index() == 0:
            write_grid(samples.reshape((rows, per_class) + samples.shape[1:]), path)
        line = (f"strata: {rows}x{per_class} samples ({settings.sampler}, {steps} steps"
                f"{f', guidance {settings.guidance:g}' if self.conditional else ''}) in {path}")
        return SampleOutput(line, samples, labels if self.conditional else None)


def _batch_shards(mesh) -> int:
    if mesh is None:
        return 1
    from train import sharding
    return sharding.data_parallel_size(mesh)


def _batch_sharding(mesh):
    if mesh is None:
        return None
    from train import sharding
    return sharding.batch_sharding(mesh)


def sample_loop(model, variables: dict, coefficients: dict, labels: jax.Array, rng: jax.Array,
                guidance: jax.Array, eta: jax.Array, *, shape: tuple[int, ...], sampler: str,
                sample_steps: int, null_label: int | None, guided: bool,
                sharding=None) -> jax.Array:
    """The whole reverse chain from pure noise: (B,) labels -> (B, *shape) images in [-1, 1].

    Pure; `jitted_sample_loop` is this function jitted.

    Args:
      model, variables: the noise predictor eps(x, t[, y], train=False) and its variables.
      coefficients: `diffusion_math.make_schedule(...)`.
      labels: (B,) int class labels (ignored when `null_label` is None: unconditional).
      guidance: classifier-free guidance scale; used only when `guided`.
      eta: DDIM noise scale.
      sampler: "ddpm" (ancestral, every timestep) or "ddim" (`sample_steps` steps).
      null_label: the model's unconditional label, None for an unconditional model.
      guided: run cond + uncond as one batch of 2B and mix them with `guidance`.
      sharding: optional batch sharding for the (B, ...) samples.
    """
    B = labels.shape[0]
    num_steps = coefficients["betas"].shape[0]
    init_rng, step_rng = jax.random.split(rng)
    x = jax.random.normal(init_rng, (B, *shape))
    if sharding is not None:
        x = jax.lax.with_sharding_constraint(x, sharding)

    def eps_fn(x, t):
        t = jnp.full((B,), t, jnp.int32)
        if null_label is None:
            return model.apply(variables, x, t, train=False)
        if not guided:
            return model.apply(variables, x, t, labels, train=False)
        null = jnp.full_like(labels, null_label)
        eps = model.apply(variables, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                          jnp.concatenate([labels, null]), train=False)  # (2B, ...)
        return dm.guided_eps(eps[:B], eps[B:], guidance)

    if sampler == "ddpm":
        ts, t_prevs = jnp.arange(num_steps - 1, -1, -1), jnp.arange(num_steps - 2, -2, -1)
    else:
        ts = dm.ddim_timesteps(num_steps, sample_steps)
        t_prevs = jnp.append(ts[1:], -1)

    def body(x, step):
        i, t, t_prev = step
        eps = eps_fn(x, t)
        noise = jax.random.normal(jax.random.fold_in(step_rng, i), x.shape)
        if sampler == "ddpm":
            x = dm.ddpm_step(coefficients, x, t, eps, noise)
        else:
            x = dm.ddim_step(coefficients, x, t, t_prev, eps, eta, noise)
        return x, None

    x, _ = jax.lax.scan(body, x, (jnp.arange(ts.shape[0]), ts, t_prevs))
    return jnp.clip(x, -1.0, 1.0)


# The model is a static argument: Linen modules are frozen dataclasses, hashed and compared
# by their fields (`models.build_model` turns a config's lists into tuples), so one
# compilation serves every equal model and shape, and nothing is keyed by object identity.
jitted_sample_loop = jax.jit(sample_loop, static_argnames=(
    "model", "shape", "sampler", "sample_steps", "null_label", "guided", "sharding"))


def write_grid(images: np.ndarray, path: str, scale: int = 4, gap: int = 2) -> None:
    """(rows, cols, H, W, C) images in [-1, 1] -> one PNG, each image scaled up `scale`x
    (nearest) with `gap` pixels between them."""
    from PIL import Image
    rows, cols, H, W, C = images.shape
    pixels = np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = H * scale, W * scale
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, C), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = gap + r * (h + gap), gap + c * (w + gap)
            canvas[y0:y0 + h, x0:x0 + w] = pixels[r, c]
    files.makedirs(os.path.dirname(files.absolute(path)))
    with files.open_write(path, text=False) as f:  # `path` may be a gs:// URL
        Image.fromarray(canvas[..., 0] if C == 1 else canvas).save(f, format="PNG")
