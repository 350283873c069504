"""Failures on purpose, through `run.py` as a user meets them: each ends in one line on
stderr and exit code 2 (or, for a signal, 75), and leaves the workdir it was pointed at
exactly as it was: checkpoints, metrics.jsonl and config.json byte-identical."""
import fcntl
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runs as cr
import errors
from helpers import run_cli
from train import checkpoints, init_from


@pytest.fixture(scope="module")
def env(tfds_dir):
    return cr.cli_env(tfds_dir)


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """A finished run with checkpoints: what every bad command below is pointed at."""
    workdir = tmp_path_factory.mktemp("trained")
    result = cr.run_train(workdir, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [l for l in result.stderr.splitlines() if l.startswith("strata: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


BAD = [  # (before the tiny config's overrides, after them, expected part of the one line)
    ([], ["--config.train.stepz=3"], "unknown config key 'train.stepz'. Did you mean 'train.steps'?"),
    ([], ["--config.train.steps=abc"], "wrong value for config.train.steps: 'abc' (expects an int)"),
    (["--config", "configs/nope.py"], [], "config file 'configs/nope.py' not found. Available: "),
    (["--config", "configs/digits_resnet.py:bogus=1"], [], "unknown config arg 'bogus'. Valid: runlocal"),
    ([], ["extra_arg"], "unexpected argument(s) 'extra_arg'"),
    ([], ["--config.model.name=resnt"], "unknown model 'resnt'. Did you mean 'resnet'? Valid: "),
    ([], ["--config.task.name=clasification"], "unknown task 'clasification'. Did you mean 'classification'?"),
    ([], ["--config.data.name=digitz"], "unknown dataset 'digitz'. Did you mean 'digits'?"),
    ([], ["--config.train.steps=0"], "config.train.steps must be positive, got 0."),
    ([], ["--config.train.batch_size=-16"], "config.train.batch_size must be positive, got -16."),
    ([], ["--config.checkpoint.best_mode=maximum"], "config.checkpoint.best_mode must be 'max' or 'min'"),
    ([], ["--config.mesh.data=3"], "mesh data*fsdp*tensor = 3*1*1 = 3, but there are 1 devices"),
    ([], ["--config.train.batch_size=18", "--config.mesh.data=4"],
     "train.batch_size=18 is not divisible by the data-parallel size data*fsdp=4"),
    ([], ["--config.optimizer.learning_rate=0.05"],
     "holds a run with a different config: optimizer.learning_rate (0.1 -> 0.05). Use another "
     "--workdir, or pass --allow_config_change"),
]


@pytest.mark.parametrize("before,after,expected", BAD, ids=[b[2].split(" ")[0] + str(i) for i, b in enumerate(BAD)])
def test_bad_input_is_one_line_and_leaves_the_workdir_untouched(before, after, expected, trained, env):
    snapshot = cr.snapshot(trained)
    extra_env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"} if "data*fsdp=4" in expected else {}
    args = cr.train_args(trained, *after)
    args[3:3] = before  # right after `run.py train`
    line = one_error_line(run_cli(*args, env={**env, **extra_env}))
    assert expected in line, line
    assert cr.snapshot(trained) == snapshot


def test_workdir_inside_a_file_is_refused(tmp_path, env):
    (tmp_path / "notes.txt").write_text("precious")
    line = one_error_line(cr.run_train(tmp_path / "notes.txt" / "run", env=env))
    assert "cannot create workdir" in line and "choose another --workdir" in line
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_workdir_not_writable_is_refused(tmp_path, env):
    (tmp_path / "ro").mkdir(mode=0o555)
    line = one_error_line(cr.run_train(tmp_path / "ro", env=env))
    assert "is not writable" in line


def test_second_run_on_a_busy_workdir_stops_with_one_line(trained, env):
    snapshot = cr.snapshot(trained)
    fd = os.open(trained / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `train` holds it
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"4242", 0)
        line = one_error_line(cr.run_train(trained, env=env))
    finally:
        os.close(fd)
    assert f"another run (pid 4242) is training in {trained}" in line
    assert cr.snapshot(trained) == snapshot


def test_allow_config_change_resumes_with_a_different_config(trained, env, tmp_path):
    work = tmp_path / "changed"
    shutil.copytree(trained, work)
    result = cr.run_train(work, "--config.optimizer.learning_rate=0.05", "--allow_config_change", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 30" in result.stderr
    assert json.load(open(work / "config.json"))["optimizer"]["learning_rate"] == 0.05


def test_divergence_stops_naming_the_step_and_the_last_good_checkpoint(env, tmp_path):
    work = tmp_path / "diverged"
    result = cr.run_train(work, "--config.optimizer.learning_rate=1e30",
                          "--config.train.checkpoint_every=1", env=env)
    line = one_error_line(result)
    found = re.search(r"non-finite at step (\d+);.*Last good checkpoint: (step (\d+)|none) in ", line)
    assert found, line
    bad = int(found.group(1))
    saved = cr.checkpoint_steps(work)
    assert (found.group(3) and int(found.group(3)) == max(saved)) or (found.group(2) == "none" and not saved)
    assert all(s < bad for s in saved)  # nothing saved at or after the bad step ...
    for s in saved:  # ... and what was saved is finite
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(cr.state(work, s))
                   if np.issubdtype(np.asarray(x).dtype, np.floating))
    assert cr.metrics(work)[-1]["train/nonfinite"] > 0  # the bad window was logged


def test_init_from_another_workdir_then_resume_ignores_it(trained, env, tmp_path):
    work = tmp_path / "finetune"
    args = cr.train_args(work, f"--config.checkpoint.init_from={trained}")
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"strata: parameters from {trained} (all matched)" in result.stderr
    # Started from trained weights: the first logged loss is below the from-scratch one.
    assert cr.metrics(work)[0]["train/loss"] < cr.metrics(trained)[0]["train/loss"]
    again = run_cli(*args, env=env)  # the workdir's own checkpoint comes first in the resume order
    assert again.returncode == 0 and "resumed from step 30" in again.stderr
    assert "parameters from" not in again.stderr


def test_init_from_mismatch_strict_lists_the_parameters(trained, env, tmp_path):
    work = tmp_path / "strict"
    line = one_error_line(cr.run_train(
        work, f"--config.checkpoint.init_from={trained / 'checkpoints' / '30'}", "--config.model.depth=14",
        "--config.model.num_classes=5", "--config.task.num_classes=5", env=env))
    assert "checkpoint.init_from does not match the model" in line
    assert "missing: params/BasicBlock_3" not in line  # paths are relative to params
    assert "missing: BasicBlock_3/" in line and re.search(r"shape_mismatch: \S+ \(\d+,\) -> \(\d+,\)", line)
    assert "init_strict=False" in line
    assert not cr.checkpoint_steps(work) and not (work / "config.json").exists()

    line = one_error_line(cr.run_train(tmp_path / "nowhere", f"--config.checkpoint.init_from={tmp_path / 'nope'}",
                                       env=env))
    assert "holds no checkpoint" in line


def test_partial_init_from_keeps_fresh_values_where_shapes_differ():
    fresh = {"a": {"w": np.zeros((2, 3), np.float32)}, "head": {"w": np.zeros((3, 5), np.float32)},
             "new": {"b": np.ones((4,), np.float32)}}
    loaded = {"a": {"w": np.full((2, 3), 7.0, np.float32)}, "head": {"w": np.ones((3, 10), np.float32)},
              "old": {"b": np.ones((1,), np.float32)}}
    with pytest.raises(errors.CheckpointError, match="missing: new/b; unexpected: old/b; shape_mismatch: "
                                                      r"head/w \(3, 10\) -> \(3, 5\)"):
        init_from.merge_params(fresh, loaded, strict=True)
    merged, report = init_from.merge_params(fresh, loaded, strict=False)
    assert report == {"missing": ["new/b"], "unexpected": ["old/b"], "shape_mismatch": ["head/w (3, 10) -> (3, 5)"],
                      "fresh_adapters": []}
    assert (merged["a"]["w"] == 7).all() and (merged["head"]["w"] == 0).all() and (merged["new"]["b"] == 1).all()


def test_checksums_agree_on_host_and_devices_and_catch_one_changed_value():
    tree = {"w": np.arange(24, dtype=np.float32).reshape(4, 6), "step": np.int32(3),
            "h": np.ones((5,), jnp.bfloat16)}
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("x",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "x"))
    on_devices = {"w": jax.device_put(tree["w"], sharded), "step": jnp.int32(3), "h": jnp.asarray(tree["h"])}
    digest, finite = checkpoints.digest_and_finite(on_devices)
    assert finite and digest == checkpoints.state_digest(tree)
    changed = dict(tree, w=tree["w"].copy())
    changed["w"][2, 1] = np.nextafter(changed["w"][2, 1], np.float32(1e9))
    with pytest.raises(checkpoints.CorruptCheckpointError, match="1 array.*w"):
        checkpoints.verify_digest(changed, digest, "checkpoint 7")
    assert not checkpoints.digest_and_finite({"w": jnp.array([1.0, jnp.nan])})[1]


def test_save_writes_the_checksums_it_started_and_restore_checks_them(tmp_path):
    state = {"w": jnp.arange(12.0).reshape(3, 4), "step": jnp.int32(5)}
    ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    pending = checkpoints.start_digest(state)
    assert isinstance(pending, checkpoints.PendingDigest)  # not waited for by the save
    ckpt.save(5, state, None, host={"window": []}, digest=pending)
    ckpt.wait()
    with open(tmp_path / "checkpoints" / "5" / "host" / "metadata") as f:
        assert json.load(f)["digest"] == checkpoints.state_digest(jax.device_get(state))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, host = ckpt.restore(5, abstract)
    assert (restored["w"] == state["w"]).all() and host["window"] == []
    ckpt.close()


def test_inspect_lists_checkpoints_and_flags_damage(trained, env, tmp_path):
    result = run_cli("inspect", str(trained), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = [l for l in out.splitlines() if re.match(r"\| \d+ \|", l)]
    assert [int(r.split("|")[1]) for r in rows] == cr.checkpoint_steps(trained)
    assert all("5,142" in r and "KiB" in r for r in rows)
    assert "latest" in rows[-1] and "eval/loss" in rows[-1]
    assert sum("best" in r for r in rows) == 1
    assert "parameters: 5,142 in" in out and "BasicBlock_2" in out and "model_state/batch_stats" in out

    work = tmp_path / "inspected"
    shutil.copytree(trained, work)
    newest = cr.checkpoint_steps(work)[-1]
    os.truncate(work / "checkpoints" / str(newest) / "state" / "_METADATA", 10)
    (work / "checkpoints-unreadable-9").mkdir()
    result = run_cli("inspect", str(work), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"| {newest} |" in result.stdout and "unreadable" in result.stdout
    assert "set aside as unreadable (kept, not used): checkpoints-unreadable-9" in result.stdout

    line = one_error_line(run_cli("inspect", str(tmp_path / "nope"), env=env))
    assert "has no checkpoints directory" in line


def test_eval_uses_the_newest_readable_checkpoint_and_changes_nothing(trained, env, tmp_path):
    work = tmp_path / "evaluated"
    shutil.copytree(trained, work)
    steps = cr.checkpoint_steps(work)
    os.truncate(work / "checkpoints" / str(steps[-1]) / "state" / "_METADATA", 10)
    (work / "checkpoints" / f"{steps[-1] + 3}.orbax-checkpoint-tmp-7").mkdir()  # a save in flight
    snapshot = cr.snapshot(work)
    result = run_cli("eval", "--workdir", str(work), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint {steps[-1]} is unreadable" in result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["step"] == steps[-2] and 0.0 <= row["eval/accuracy"] <= 1.0
    assert cr.snapshot(work) == snapshot  # read-only: nothing moved, the save in flight left alone
