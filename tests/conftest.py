"""Strict JAX settings for every test: 8 simulated CPU devices, rank promotion raises."""
import os
import shutil
import subprocess
import sys
import tempfile

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# In-process compilations go to a persistent compilation cache that lives for one test run
# (shared by the xdist workers, removed at the end): a test that builds the same train step
# again (a resume, a second Experiment, a fresh reference run) loads it instead of compiling
# it again. XLA builds the same executable either way, so results do not change; jit's own
# in-memory cache (what the "does not recompile" tests count) is untouched. Set
# STRATA_TEST_JIT_CACHE=DIR to keep the cache in DIR across runs instead.
JIT_CACHE_ENV = "STRATA_TEST_JIT_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and not os.environ.get(JIT_CACHE_ENV):
        # The xdist controller (or a plain run): workers inherit the directory via the env.
        os.environ[JIT_CACHE_ENV] = config._strata_jit_cache = tempfile.mkdtemp(prefix="strata-test-jit-")
    jax.config.update("jax_compilation_cache_dir", os.environ[JIT_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    path = getattr(config, "_strata_jit_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(JIT_CACHE_ENV, None)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data dir for the whole session; embedded datasets are prepared into it once."""
    path = tmp_path_factory.mktemp("tfds")
    return str(path)


# Test files that start run.py subprocesses or train whole configs: the rest is the fast
# subset (`make test-fast`, `pytest -m "not slow"`) for the edit-test loop.
SLOW_FILES = ("test_cli.py", "test_errors.py", "test_failures.py", "test_multiprocess.py",
              "test_resume.py", "test_sweeps.py", "test_evaluators.py", "test_diffusion.py",
              "test_language_model.py", "test_slurm.py", "test_buckets.py")


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


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


GCS_BUCKET = "strata-test"  # the emulator's one bucket


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A GCS emulator on 127.0.0.1 (tests/cluster/gcs_emulator.py, a free port) for this
    session; yields the environment that points every client at it (gcsfs and
    google-cloud-storage: STORAGE_EMULATOR_HOST; tensorstore: TENSORSTORE_GCS_HTTP_URL and a
    fixed token) and keeps them all off the network (no metadata server, no credentials
    lookup). Fails in CI if it cannot start; skips elsewhere."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster", "gcs_emulator.py")
    # Its request log goes to a file: a pipe nobody reads would fill up and stall it.
    log_path = tmp_path_factory.mktemp("gcs") / "emulator.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, script, str(port), GCS_BUCKET], stdout=subprocess.PIPE,
                            stderr=log, text=True)
    ready = proc.stdout.readline().strip() == "ready"  # the script prints it once it serves
    if not ready:
        proc.kill()
        proc.wait()
        log.close()
        why = (log_path.read_text().strip().splitlines() or ["no output"])[-1]
        message = f"the GCS emulator did not start ({why}); pip install gcp-storage-emulator"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    url = f"http://127.0.0.1:{port}"
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "FSSPEC_GS_TOKEN": "anon",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true",
           "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    try:
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
