"""Sharding changes nothing but placement: data, FSDP and tensor meshes give the losses of
one device, parameters really are split, and gradient accumulation is exact."""
import jax
import ml_collections
import numpy as np
import pytest

from models import build_model
from train.sharding import to_global
from train.optimizers import build_optimizer
from train.sharding import DEFAULT_RULES, make_mesh
from train.state import create_train_state
from train.step import jit_train_step
from train.tasks import build_task

STEPS = 20
MESHES = {"data8": (8, 1, 1), "fsdp8": (1, 8, 1), "2x2x2": (2, 2, 2)}


def image_batches(n, batch=16, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.normal(size=(batch, *shape)).astype(np.float32),
             "label": rng.integers(0, 10, size=(batch,)).astype(np.int32)} for _ in range(n)]


def token_batches(n, batch=16, seq=17, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.integers(0, vocab, size=(batch, seq)).astype(np.int32)} for _ in range(n)]


FAMILIES = {
    "resnet": (dict(name="resnet", depth=8, width=8, num_classes=10),
               dict(name="classification", num_classes=10), image_batches),
    "vit": (dict(name="vit", variant="Ti/2", width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=10),
            dict(name="classification", num_classes=10), image_batches),
    "gpt": (dict(name="gpt", vocab_size=64, num_layers=2, num_heads=4, width=32, max_len=16),
            dict(name="language_model", vocab_size=64), token_batches),
}


def optimizer_config():
    # SGD: Adam divides by sqrt(v), which turns float32 reduction-order noise in near-zero
    # gradients into O(lr) differences, so it cannot test "same numbers" at 1e-5.
    return ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.02, momentum=0.9, nesterov=False,
                                          schedule="constant", warmup_steps=0, weight_decay=1e-4,
                                          grad_clip=1.0))


def train(family, mesh, steps=STEPS, grad_accum=1, batches=None):
    model_cfg, task_cfg, make_batches = FAMILIES[family]
    model = build_model(**model_cfg)
    task = build_task(**task_cfg)
    tx = build_optimizer(optimizer_config(), steps)
    batches = batches or make_batches(4) * (steps // 4 + 1)  # a few batches, seen repeatedly
    example = {k: v[:1] for k, v in batches[0].items()}
    state, shardings = create_train_state(model, task, tx, example, 0, False, mesh, DEFAULT_RULES)
    from train.sharding import batch_sharding
    step = jit_train_step(model, task, tx, shardings, batch_sharding(mesh), grad_accum=grad_accum)
    losses = []
    for b in batches[:steps]:
        state, m = step(state, to_global(b, mesh))
        losses.append(float(m["loss"]))
    return np.array(losses), state


@pytest.fixture(scope="module")
def single_device_runs():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = train(family, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
        return cache[family]
    return get


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_mesh_gives_single_device_losses(family, mesh_name, single_device_runs):
    reference, _ = single_device_runs(family)
    losses, state = train(family, make_mesh(*MESHES[mesh_name]))
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
    assert losses[-1] < losses[0]  # it trained


def test_large_parameters_are_split():
    _, state = train("vit", make_mesh(2, 2, 2), steps=1)
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    kernel = next(v for p, v in leaves if v.shape == (32, 64))  # MLP input: (embed, mlp)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (16, 32)
    _, state = train("gpt", make_mesh(1, 8, 1), steps=1)
    embedding = next(v for p, v in jax.tree_util.tree_leaves_with_path(state.params) if v.shape == (64, 32))
    assert embedding.addressable_shards[0].data.size == 64 * 32 // 8


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_grad_accumulation_equals_full_batch():
    mesh = make_mesh(-1, 1, 1)
    batches = token_batches(1, batch=32)
    _, full = train("gpt", mesh, steps=1, batches=batches)
    _, accum = train("gpt", mesh, steps=1, grad_accum=4, batches=batches)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(accum.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
