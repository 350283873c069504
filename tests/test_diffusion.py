"""Diffusion task: the loss learns, the jitted sampling loop is wired right (against a
step-by-step reference), guidance batching, the Frechet distance, the judge classifier,
and `run.py train` + `run.py sample` end to end."""
import json
import os
import types
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from configs.common import base_config
from helpers import run_cli
from models import build_model
from train.tasks import TaskContext, build_task
from train.tasks import diffusion_math as dm
from train.evaluators import sample_quality as sq
from train.tasks.diffusion import jitted_sample_loop

TINY_UNET = dict(channels=8, channel_mults=(1,), num_res_blocks=1, num_groups=4, num_classes=10)


@partial(jax.jit, static_argnums=0)
def init_params(model, *args):
    """Jitted init with an "rbg" key: compiling threefry for every initializer takes
    several times longer on CPU than the rest of the init. One compilation per shape."""
    return model.init(jax.random.key(0, impl="rbg"), *args, train=False)["params"]


def digits_batch(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Real 8x8 digits in [-1, 1] straight from scikit-learn (no TFDS needed)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images[:n, :, :, None] / 8.0 - 1.0).astype(np.float32), d.target[:n].astype(np.int32)


@pytest.fixture(scope="module")
def tiny():
    """A tiny conditional U-Net with every parameter perturbed, so its output depends on
    x, t and the label (a fresh U-Net's zero-initialised output layers predict eps = 0)."""
    model = build_model("unet", **TINY_UNET)
    x, y = digits_batch(16)
    params = init_params(model, x, jnp.zeros(16, jnp.int32), y)
    rng = np.random.default_rng(1)
    perturb = lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32)  # noqa: E731
    return model, {"params": jax.tree.map(perturb, params)}


def context(model, variables, rng=0):
    data_info = types.SimpleNamespace(features={"image": types.SimpleNamespace(shape=(8, 8, 1))})
    return TaskContext(model=model, variables=variables, data_info=data_info, mesh=None,
                       rng=jax.random.key(rng))


def settings(**overrides):
    """config.sample with DDIM 4 steps and the given overrides."""
    sample = base_config().sample
    sample.steps = 4
    sample.update(overrides)
    return sample


def test_loss_overfits_one_batch():
    task = build_task("diffusion", num_steps=100, cond_drop=0.1)
    model = build_model("unet", **TINY_UNET)
    x, y = digits_batch(16)
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    args, _ = task.init_args(batch)
    assert [a.shape for a in args] == [(16, 8, 8, 1), (16,), (16,)]
    params = init_params(model, *args)
    tx = optax.adam(3e-3)

    def loss_fn(params, rng):
        apply = lambda *a: (model.apply({"params": params}, *a, train=True), {})  # noqa: E731
        return task.loss(apply, batch, rng)[0]

    @jax.jit
    def step(params, opt_state, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, rng)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = tx.init(params), []
    for i in range(60):
        params, opt_state, loss = step(params, opt_state, jax.random.PRNGKey(i))
        losses.append(float(loss))  # at the parameters before this step's update
    print(f"denoising loss on one batch: {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    np.testing.assert_allclose(losses[0], 1.0, atol=0.15)  # eps = 0 at init: E[noise^2] = 1
    assert np.mean(losses[-10:]) < 0.4 * losses[0]


def test_eval_sums_are_masked_and_seeded():
    task = build_task("diffusion", num_steps=100)
    model = build_model("unet", **TINY_UNET)
    x, y = digits_batch(16)
    mask = jnp.asarray([1.0] * 5 + [0.0] * 11)
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y), "mask": mask}
    params = init_params(model, *task.init_args(batch)[0])
    apply = lambda *a: (model.apply({"params": params}, *a, train=False), {})  # noqa: E731
    eval_sums = jax.jit(lambda b, r: task.eval_sums(apply, b, r)["loss"])
    s, w = eval_sums(batch, jax.random.key(3))
    assert float(w) == 5.0
    assert float(s) == float(eval_sums(batch, jax.random.key(3))[0])
    s_all, w_all = eval_sums(dict(batch, mask=jnp.ones(16)), jax.random.key(3))
    assert float(w_all) == 16.0 and float(s_all) > float(s) > 0


@partial(jax.jit, static_argnums=0)
def eps_at(model, variables, x, t, y):
    return model.apply(variables, x, t, y, train=False)


def reference_samples(model, variables, coefficients, labels, rng, guidance, *, sampler,
                      sample_steps, null_label):
    """The reverse chain one Python step at a time, with the public diffusion_math steps
    and the same random numbers as `sample_loop`: cond and uncond as two separate calls."""
    B = len(labels)
    init_rng, step_rng = jax.random.split(rng)
    x = jax.random.normal(init_rng, (B, 8, 8, 1))
    T = coefficients["betas"].shape[0]
    ts = (list(range(T - 1, -1, -1)) if sampler == "ddpm"
          else [int(t) for t in dm.ddim_timesteps(T, sample_steps)])
    null = jnp.full_like(labels, null_label)
    for i, t in enumerate(ts):
        tb = jnp.full((B,), t, jnp.int32)
        eps = dm.guided_eps(eps_at(model, variables, x, tb, labels),
                            eps_at(model, variables, x, tb, null), guidance)
        noise = jax.random.normal(jax.random.fold_in(step_rng, i), x.shape)
        if sampler == "ddpm":
            x = dm.ddpm_step(coefficients, x, t, eps, noise)
        else:
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = dm.ddim_step(coefficients, x, t, t_prev, eps, 0.0, noise)
    return np.clip(np.asarray(x), -1, 1)


@pytest.mark.parametrize("sampler,num_steps,sample_steps", [("ddim", 1000, 4), ("ddpm", 20, 20)])
def test_sampling_loop_matches_step_by_step_reference(tiny, sampler, num_steps, sample_steps):
    model, variables = tiny
    coefficients = dm.make_schedule("cosine", num_steps)
    labels = jnp.asarray(np.repeat(np.arange(10), 2), jnp.int32)  # the shapes generate() uses
    rng = jax.random.key(5)
    out = jitted_sample_loop(
        model, variables, coefficients, labels, rng, jnp.float32(2.5), jnp.float32(0.0),
        shape=(8, 8, 1), sampler=sampler, sample_steps=sample_steps, null_label=10, guided=True)
    ref = reference_samples(model, variables, coefficients, labels, rng, 2.5, sampler=sampler,
                            sample_steps=sample_steps, null_label=10)
    assert out.shape == (20, 8, 8, 1)
    np.testing.assert_allclose(out, ref, atol=2e-4)


def test_generate_shape_range_labels_and_guidance_batching(tiny):
    model, variables = tiny
    task = build_task("diffusion", num_steps=1000)
    ctx = context(model, variables)
    labels = np.repeat(np.arange(10), 2)  # 20 rows
    guided = task.generate(ctx, labels, settings(guidance=3.0))
    assert guided.shape == (20, 8, 8, 1) and guided.dtype == np.float32
    assert np.isfinite(guided).all() and guided.min() >= -1 and guided.max() <= 1
    assert np.abs(guided[0::2] - guided[1::2]).max() > 1e-3  # each row starts from its own noise

    # guidance 0 is the unconditional model: the same as sampling with the null label;
    # guidance 1 is the conditional model run alone (no uncond half in the batch).
    g0 = task.generate(ctx, labels, settings(guidance=0.0))
    np.testing.assert_allclose(g0, task.generate(ctx, np.full(20, 10), settings(guidance=1.0)), atol=1e-5)
    g1 = task.generate(ctx, labels, settings(guidance=1.0))
    assert np.abs(g1 - g0).max() > 1e-2 and np.abs(guided - g1).max() > 1e-2  # labels matter


def test_generate_pads_the_batch_to_the_mesh(tiny):
    from train import sharding
    model, variables = tiny
    task = build_task("diffusion", num_steps=1000)
    ctx = context(model, variables)
    ctx.mesh = sharding.make_mesh(-1, 1, 1)  # the 8 simulated devices
    labels = np.repeat(np.arange(10), 2)  # not a multiple of 8: padded to 24 rows, cut to 20
    on_mesh = task.generate(ctx, labels, settings())
    assert on_mesh.shape == (20, 8, 8, 1)
    np.testing.assert_allclose(on_mesh, task.generate(context(model, variables), labels, settings()),
                               atol=1e-5)


def test_frechet_distance_matches_scipy_sqrtm_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 0.3
    (m1, s1), (m2, s2) = sq.gaussian_stats(a), sq.gaussian_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    np.testing.assert_allclose(sq.frechet_distance(m1, s1, m2, s2), reference, rtol=1e-8)
    assert abs(sq.frechet_distance(m1, s1, m1, s1)) < 1e-8
    # Equal covariances: the distance is exactly the squared shift of the means.
    shifts = [sq.frechet_distance(m1, s1, *sq.gaussian_stats(a + d)) for d in (0.0, 0.5, 1.0, 2.0)]
    np.testing.assert_allclose(shifts, [6 * d**2 for d in (0.0, 0.5, 1.0, 2.0)], atol=1e-8)
    # Rank-deficient covariances (dead ReLU units) stay finite and non-negative.
    low = np.concatenate([a[:, :3], np.zeros((500, 3))], axis=1)
    assert 0 <= sq.frechet_distance(*sq.gaussian_stats(low), m1, s1) < np.inf


def test_judge_classifies_real_test_images(tfds_dir):
    from data import sources
    train, _ = sources.open_source("digits", "train", tfds_dir)
    test, _ = sources.open_source("digits", "test", tfds_dir)
    judge = sq.judge_for(train, test, "to_float(-1, 1)")
    assert sq.judge_for(train, test, "to_float(-1, 1)") is judge  # fitted once per process
    images, labels = sq.load_split(test, "to_float(-1, 1)")
    assert images.shape == (360, 8, 8, 1) and images.min() == -1 and images.max() == 1
    print(f"judge: test accuracy {judge.test_accuracy:.3f}, fd floor {judge.fd_real_floor:.2f}")
    assert judge.accuracy(images, labels) == judge.test_accuracy > 0.9
    assert judge.accuracy(images, (labels + 1) % 10) < 0.1  # wrong conditioning is caught
    assert judge.fd(images) == pytest.approx(judge.fd_real_floor)
    train_images, _ = sq.load_split(train, "to_float(-1, 1)")
    assert abs(judge.fd(train_images)) < 1e-6
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.5, images.shape), -1, 1)
    assert judge.fd(noisy) > judge.fd_real_floor + 5
    assert judge.fd(images[labels == 3]) > judge.fd_real_floor + 5  # one class is not the data


def test_train_then_sample_end_to_end(tfds_dir, tmp_path):
    workdir = str(tmp_path / "ddpm")
    env = {"TFDS_DATA_DIR": tfds_dir}
    r = run_cli("train", "--config", "configs/digits_ddpm.py:runlocal=1", "--workdir", workdir,
                "--config.train.progress=False", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert {"eval/loss", "eval/sample_accuracy", "eval/fd", "eval/fd_real_floor"} <= set(last)
    assert 0 <= last["eval/sample_accuracy"] <= 1
    assert last["eval/fd"] > last["eval/fd_real_floor"] > 0

    r = run_cli("sample", "--workdir", workdir, "--config.sample.guidance=1.5",
                "--config.sample.per_class=3", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    path = os.path.join(workdir, "samples_ddim5_guidance1.5.png")
    assert path in r.stdout
    from PIL import Image
    grid = np.asarray(Image.open(path))
    assert grid.shape == (10 * 34 + 2, 3 * 34 + 2)  # 10 rows of 3 digits, 32 px + 2 px gaps
