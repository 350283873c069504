"""Strict JAX settings for every test: 8 simulated CPU devices, rank promotion raises."""
import os
import shutil
import subprocess
import sys

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data dir for the whole session; embedded datasets are prepared into it once."""
    path = tmp_path_factory.mktemp("tfds")
    return str(path)


# Test files that start run.py subprocesses or train whole configs: the rest is the fast
# subset (`make test-fast`, `pytest -m "not slow"`) for the edit-test loop.
SLOW_FILES = ("test_cli.py", "test_errors.py", "test_failures.py", "test_multiprocess.py",
              "test_resume.py", "test_sweeps.py", "test_evaluators.py", "test_diffusion.py",
              "test_language_model.py", "test_slurm.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


def _slurm_missing() -> str | None:
    """Why this host has no SLURM cluster that takes jobs, or None when it has one."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    states = out.stdout.split()
    if out.returncode or not states:
        return f"sinfo failed: {(out.stderr.strip() or 'no nodes').splitlines()[-1]}"
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no node takes jobs (states: {' '.join(states)})"
    return None


@pytest.fixture(scope="session")
def slurm() -> None:
    """A running SLURM cluster (tests/cluster/slurm_up.sh starts a one-node one). Its absence
    fails the test in CI (CI=true, where .ci/run starts it) and skips it elsewhere."""
    why = _slurm_missing()
    if why:
        message = f"SLURM is not running ({why}); start it with tests/cluster/slurm_up.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
