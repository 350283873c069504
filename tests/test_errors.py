"""Exit codes: a user mistake (a StrataError) is one line and exit 2; anything else is a
bug and keeps its traceback (exit 1). Also the validation that refuses bad numbers."""
import os
import subprocess
import sys

import pytest

import errors
from helpers import REPO, run_cli

# Runs run.py with `target` (module:attribute) replaced by a function raising `raise_expr`.
PATCHED_RUN = """
import importlib, runpy, sys
module_name, attribute = sys.argv[1].split(":")
raise_expr = sys.argv[2]
def broken(*args, **kwargs):
    import errors
    raise eval(raise_expr)
*owner, name = attribute.split(".")
target = importlib.import_module(module_name)
for part in owner:
    target = getattr(target, part)
setattr(target, name, broken)
sys.argv = ["run.py"] + sys.argv[3:]
runpy.run_path("run.py", run_name="__main__")
"""


def run_patched(target: str, raise_expr: str, *args: str, env: dict | None = None):
    full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", PATCHED_RUN, target, raise_expr, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=full_env)


def test_type_error_inside_a_model_is_a_bug_with_traceback(tmp_path):
    # A shape bug in a model raises TypeError from inside JAX tracing: the patched forward
    # pass raises where a real one would, during the model's init.
    result = run_patched("models.resnet:ResNet.__call__",
                         "TypeError('dot_general requires contracting dimensions to have the same "
                         "shape, got (16,) and (32,)')",
                         "train", "--workdir", str(tmp_path / "run"), "--config.train.steps=2",
                         "--config.train.progress=False", env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert result.returncode == errors.EXIT_BUG, result.stderr[-2000:]
    assert "Traceback (most recent call last)" in result.stderr
    assert "TypeError: dot_general requires contracting dimensions" in result.stderr
    assert "strata: error:" not in result.stderr


@pytest.mark.parametrize("cls", ["ConfigError", "UnknownNameError", "MeshError", "DataError",
                                 "CheckpointError", "TrainingError"])
def test_each_user_error_class_is_one_line_and_exit_2(cls, tmp_path):
    result = run_patched("commands.inspect_run:describe",
                         f"errors.{cls}('the {cls} problem;\\n  the fix')", "inspect", str(tmp_path))
    assert result.returncode == errors.EXIT_USER, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"strata: error: the {cls} problem; the fix"]


def test_plain_value_error_is_a_bug_not_a_user_mistake(tmp_path):
    result = run_patched("commands.inspect_run:describe", "ValueError('an internal invariant')",
                         "inspect", str(tmp_path))
    assert result.returncode == errors.EXIT_BUG
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: an internal invariant" in result.stderr


@pytest.mark.parametrize("override,expected", [
    ("--config.optimizer.learning_rate=nan", "config.optimizer.learning_rate must be a finite number"),
    ("--config.optimizer.learning_rate=-0.1", "config.optimizer.learning_rate must not be negative"),
    ("--config.train.log_every=0", "config.train.log_every must be positive, got 0."),
    ("--config.train.grad_accum=0", "config.train.grad_accum must be positive, got 0."),
    ("--config.train.ema_decay=1.5", "config.train.ema_decay must be in [0, 1), got 1.5."),
    ("--config.evals.default.every=-5", "config.evals.default.every must not be negative"),
    ("--config.evals.default.type=accuracyy", "unknown evaluator type 'accuracyy'."),
    ("--config=configs/digits_ddpm.py --config.sample.sampler=ddpn", "unknown config.sample.sampler 'ddpn'"),
    ("--config=configs/digits_ddpm.py --config.sample.steps=5000", "config.sample.steps must be in [1, task.num_steps=1000]"),
])
def test_bad_numbers_are_refused_before_any_compute(override, expected, tmp_path):
    result = run_cli("train", "--workdir", str(tmp_path / "run"), *override.split(),
                     env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    lines = [l for l in result.stderr.splitlines() if l.startswith("strata: error:")]
    assert result.returncode == errors.EXIT_USER, result.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_value_two_sections_need_is_set_once():
    """num_classes lives in task.*; the model's copy is a FieldReference to it, and a config
    that sets both to different values is refused."""
    from configs.digits_resnet import get_config
    from train import checks
    c = get_config()
    c.task.num_classes = 7
    assert c.model.num_classes == 7
    c.model.num_classes = 5  # through the reference: both change
    assert c.task.num_classes == 5
    checks.check_config(c)
    import ml_collections
    c = ml_collections.ConfigDict(get_config().to_dict())  # as read back: two plain copies
    c.model.num_classes = 3
    with pytest.raises(errors.ConfigError, match="config.task.num_classes=10 but config.model.num_classes=3"):
        checks.check_config(c)
