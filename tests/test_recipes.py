"""The published image recipes (configs/cifar10_resnet56.py, imagenet_resnet50.py,
imagenet_vit_s16.py, cifar10_ddpm.py): the exact networks have the published parameter
counts, the optimizers do what the sources do, and each config trains two steps and
evaluates through the real pipeline at its real resolution on TFDS's mock data.

Their two-step training runs on TFDS mock data at the real resolution are
tests/test_evaluators.py::test_every_config_trains_two_steps_and_evaluates, marked `heavy`:
compiling the full networks for 8 simulated devices takes minutes of CPU, so
`make test-heavy` (CI's second step after `make test`) runs them."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import build_model
from train import optimizers

# config -> (input shape of one example, published parameter count, its source)
PUBLISHED = {
    "cifar10_resnet56": ((32, 32, 3), 0.85e6),      # He et al. 2016, Table 6
    "imagenet_resnet50": ((224, 224, 3), 25.56e6),  # torchvision / Keras ResNet-50: 25,557,032
    "imagenet_vit_s16": ((224, 224, 3), 22.05e6),   # timm vit_small_patch16_224, 1000 classes
    "cifar10_ddpm": ((32, 32, 3), 35.7e6),          # Ho et al. 2020, sec. 4
}


def config(name: str, arg: str | None = None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def param_count(name: str) -> int:
    """Parameters of the config's exact network, from shapes alone (jax.eval_shape)."""
    c = config(name)
    model = build_model(**c.model.to_dict())
    x = jnp.zeros((1, *PUBLISHED[name][0]), jnp.float32)
    args = (x, jnp.zeros((1,), jnp.int32)) if c.model.name == "unet" else (x,)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, train=False))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_one(name):
    count = param_count(name)
    published = PUBLISHED[name][1]
    assert abs(count - published) / published < 0.005, (name, count, published)


def test_exact_counts_of_the_recipe_networks():
    """The measured counts that README.md's recipe table reports."""
    counts = {name: param_count(name) for name in sorted(PUBLISHED)}
    assert counts == {"cifar10_ddpm": 35_746_307, "cifar10_resnet56": 853_018,
                      "imagenet_resnet50": 25_557_032, "imagenet_vit_s16": 22_122_472}


def test_resnet56_learning_rate_divided_by_10_at_32k_and_48k():
    c = config("cifar10_resnet56")
    schedule = optimizers.learning_rate_schedule(c.optimizer, c.train.steps)
    lrs = [float(schedule(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_piecewise_schedule_with_warmup_and_bad_boundaries():
    from errors import ConfigError
    c = config("cifar10_resnet56").optimizer
    c.warmup_steps, c.boundaries = 10, (20, 30)
    schedule = optimizers.learning_rate_schedule(c, 40)
    lrs = [float(schedule(s)) for s in (0, 5, 10, 19, 20, 29, 30)]
    np.testing.assert_allclose(lrs, [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6, atol=1e-9)
    for bad in ((), (30, 20), (5, 20), (20.5,)):
        c.boundaries = bad
        with pytest.raises(ConfigError, match="optimizer.boundaries must be increasing whole steps"):
            optimizers.learning_rate_schedule(c, 40)
    c.boundaries, c.decay_factor = (20,), 0.0
    with pytest.raises(ConfigError, match="decay_factor must be in"):
        optimizers.learning_rate_schedule(c, 40)


def test_vit_weight_decay_is_big_visions_decoupled_wd():
    """big_vision: w <- w - sched(t) * (lr * adam + wd * w), wd = 1e-4 not scaled by lr.
    With zero gradients Adam's part is 0, so at the peak (no warm-up here) one step
    shrinks a kernel by exactly 1e-4 x w, and leaves a bias alone."""
    c = config("imagenet_vit_s16").optimizer
    c.warmup_steps = 0
    tx = optimizers.build_optimizer(c, 100)
    params = {"kernel": jnp.full((4, 4), 2.0), "bias": jnp.ones((4,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -1e-4 * 2.0 * np.ones((4, 4)), rtol=1e-5)
    np.testing.assert_array_equal(updates["bias"], np.zeros(4))
