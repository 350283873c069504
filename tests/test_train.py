"""The loop end to end on digits, mock TFDS data, resume, recompilation, overfitting."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import tiny_resnet_config
from train import loop, sharding, step as step_lib
from train.sharding import to_global


def read_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def test_train_writes_metrics_config_manifest_checkpoints(tfds_dir, tmp_path, monkeypatch):
    c = tiny_resnet_config(tfds_dir, steps=4, eval_every=4, checkpoint_every=2)
    compiles = []
    real = step_lib.compile_in_background
    monkeypatch.setattr(step_lib, "compile_in_background", lambda *a: compiles.append(1) or real(*a))
    last = loop.train(c, str(tmp_path))
    assert len(compiles) == 1
    lines = read_lines(tmp_path)
    assert [l["step"] for l in lines] == [2, 4]
    assert "eval/accuracy" in lines[-1] and "train/loss" in lines[0]
    assert 0.0 <= last["eval/accuracy"] <= 1.0
    manifest = json.load(open(tmp_path / "manifest.json"))
    assert manifest["seed"] == 0 and manifest["devices"]["count"] == 8
    assert json.load(open(tmp_path / "config.json"))["model"]["depth"] == 8
    assert sorted(os.listdir(tmp_path / "checkpoints")) >= ["2", "4"]
    assert os.listdir(tmp_path / "tensorboard")
    # Rerunning the complete workdir trains nothing and compiles no train step.
    loop.train(c, str(tmp_path))
    assert len(compiles) == 1 and read_lines(tmp_path) == lines


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_resume_continues_from_saved_step(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=3, checkpoint_every=3, log_every=1)
    c.optimizer.schedule = "constant"  # the cosine schedule depends on train.steps
    loop.train(c, str(tmp_path))
    c.train.steps = 6
    loop.train(c, str(tmp_path))
    steps = [l["step"] for l in read_lines(tmp_path)]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed at 4, nothing repeated

    # An uninterrupted 6-step run ends with the same loss at step 6 (data order resumed too).
    fresh = tmp_path / "fresh"
    loop.train(c, str(fresh))
    np.testing.assert_allclose(read_lines(fresh)[-1]["train/loss"], read_lines(tmp_path)[-1]["train/loss"],
                               rtol=1e-6)


def _experiment(tfds_dir, tmp_path, **kw):
    c = tiny_resnet_config(tfds_dir, **kw)
    return c, loop.Experiment(c, str(tmp_path))


def test_jitted_step_does_not_recompile(tfds_dir, tmp_path):
    c, exp = _experiment(tfds_dir, tmp_path)
    state = exp.fresh_state()
    step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding)
    it = exp.train_iterator()
    state, _ = step(state, to_global(next(it), exp.mesh))
    before = step._cache_size()
    state, _ = step(state, to_global(next(it), exp.mesh))
    state, _ = step(state, to_global(next(it), exp.mesh))
    assert step._cache_size() == before == 1
    exp.checkpointer.close()


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_overfits_one_batch(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=40)
    c.model.width = 8
    c.optimizer.update(name="adamw", learning_rate=1e-2, schedule="constant", weight_decay=0.0)
    exp = loop.Experiment(c, str(tmp_path))
    state = exp.fresh_state()
    step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding)
    batch = to_global(next(exp.train_iterator()), exp.mesh)
    losses = []
    for _ in range(40):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.1 * losses[0], losses
    exp.checkpointer.close()


def test_overrides_reach_the_model(tfds_dir, tmp_path):
    c, exp = _experiment(tfds_dir, tmp_path)
    c2 = tiny_resnet_config(tfds_dir)
    c2.model.depth = 14
    exp2 = loop.Experiment(c2, str(tmp_path / "b"))
    n1 = sum(x.size for x in jax.tree.leaves(exp.abstract_state.params))
    n2 = sum(x.size for x in jax.tree.leaves(exp2.abstract_state.params))
    assert n2 > n1
    assert exp2.model.depth == 14
    exp.checkpointer.close()
    exp2.checkpointer.close()


def test_params_are_sharded_by_the_rules(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir)
    c.mesh.data, c.mesh.fsdp = 1, 8
    c.model.width = 8
    exp = loop.Experiment(c, str(tmp_path))
    state = exp.fresh_state()
    kernel = state.params["BasicBlock_0"]["Conv_0"]["kernel"]  # (3, 3, 8, 8): conv_in -> fsdp
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp", None)
    assert kernel.addressable_shards[0].data.shape == (3, 3, 1, 8)
    exp.checkpointer.close()


def test_one_train_step_on_mock_mnist(tmp_path):
    c = tiny_resnet_config(str(tmp_path / "tfds"), steps=2, checkpoint_every=2, log_every=1)
    c.data.name = "mnist"
    c.data.preprocess = "to_float|pad_crop(2)"
    c.data.eval_preprocess = "to_float"
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        last = loop.train(c, str(tmp_path / "run"))
    assert np.isfinite(last["train/loss"])
    assert 0.0 <= last["eval/accuracy"] <= 1.0


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
    from data.sources import DataError, open_source
    with pytest.raises(DataError, match="python run.py prepare mnist"):
        open_source("mnist", "train", str(tmp_path))


def test_unknown_dataset_lists_embedded_ones(tmp_path):
    from data.sources import DataError, open_source
    with pytest.raises(DataError, match="Embedded .*digits"):
        open_source("digitz", "train", str(tmp_path))


def test_mesh_and_batch_errors_name_the_numbers():
    with pytest.raises(sharding.MeshError, match="3\\*1\\*1 = 3.*8 devices"):
        sharding.make_mesh(3, 1, 1)
    mesh = sharding.make_mesh(-1, 1, 1)
    with pytest.raises(sharding.MeshError, match="batch_size=12 .* data\\*fsdp=8"):
        sharding.check_batch(12, mesh)
