"""The state's init program depends on shapes only: the seed is its argument and the
example batch enters as zeros, so new seeds and new data reuse one compiled init, and the
parameters are those of `model.init` with the seed's key."""
import warnings

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from models import build_model
from train.optimizers import build_optimizer
from train.sharding import DEFAULT_RULES, make_mesh
from train.state import plan_train_state
from train.tasks import build_task

def _setup():
    model = build_model(name="resnet", depth=8, width=8, num_classes=10)
    task = build_task(name="classification", num_classes=10)
    tx = build_optimizer(ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, schedule="constant",
        warmup_steps=0, weight_decay=0.0, grad_clip=0.0)), 10)
    return model, task, tx, make_mesh(1, 1, 1, devices=jax.devices()[:1])


def _example(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(1, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size=(1,))}  # int64, as TFDS gives digits' labels


def test_seed_and_example_values_are_not_compiled_in():
    model, task, tx, mesh = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. int64 zeros requested without x64: noise on every run
        programs = {str(plan_train_state(model, task, tx, _example(s), s, False, mesh, DEFAULT_RULES).jaxpr)
                    for s in (0, 1, 12345)}
    assert len(programs) == 1


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("seed", [0, 3, -1, 2**32 + 3])
def test_params_are_model_init_with_the_seeds_key(seed):
    model, task, tx, mesh = _setup()
    state = plan_train_state(model, task, tx, _example(0), seed, False, mesh, DEFAULT_RULES).create()
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    expected = model.init({"params": init_rng, "dropout": init_rng}, _example(0)["image"], train=False)
    got, want = jax.tree.leaves(state.params), jax.tree.leaves(nn.unbox(expected["params"]))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)  # jit vs eager: 1 ulp
    np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(state_rng))

