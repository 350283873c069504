"""gs:// workdirs against a local GCS emulator (the `gcs` fixture: 127.0.0.1 only): train,
kill, resume; eval, sample, inspect, report and a local sweep into a bucket; the bucket
lock; a missing bucket or an unreachable endpoint is one line, exit 2, nothing written."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import GCS_BUCKET
from helpers import REPO, RUN_PY, run_cli

# Whole runs into a bucket (minutes each on 2 cores): `make test-heavy`, CI's second step.
pytestmark = pytest.mark.heavy

TIMEOUT = 600
CONFIG = "tests/sweep_config.py:steps=30"  # ResNet-8 on digits; checkpoints every 4 steps
TRAIN = ["train", "--config", CONFIG, "--config.train.profile_steps=(2,3)"]  # a trace too


def _env(gcs: dict, tfds_dir: str) -> dict:
    return {**gcs, "TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"}


def _bucket(gcs: dict):
    """The emulator's bucket, through google-cloud-storage, without touching os.environ."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs["STORAGE_EMULATOR_HOST"]})
    return client.bucket(GCS_BUCKET)


def _read(gcs: dict, key: str) -> str | None:
    blob = _bucket(gcs).blob(key)
    return blob.download_as_text() if blob.exists() else None


def _names(gcs: dict, prefix: str) -> set[str]:
    return {b.name for b in _bucket(gcs).list_blobs(prefix=prefix)}


def _one_line_exit_2(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("strata: error:"), result.stderr[-2000:]
    return lines[0]


def test_train_killed_and_resumed_in_a_bucket_equals_an_uninterrupted_run(gcs, tfds_dir, tmp_path):
    env = _env(gcs, tfds_dir)
    straight = run_cli(*TRAIN, "--workdir", f"gs://{GCS_BUCKET}/straight",
                       env=env, timeout=TIMEOUT)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = _read(gcs, "straight/metrics.jsonl")
    assert json.loads(expected.splitlines()[-1])["step"] == 30
    names = _names(gcs, "straight/")
    assert {"straight/config.json", "straight/manifest.json", "straight/perf.jsonl"} <= names
    assert any(n.startswith("straight/tensorboard/events.out.tfevents") for n in names)
    assert "straight/.lock" not in names  # released at the end

    # SIGKILL part-way: no clean-up at all, the lock object stays behind (its pid is dead).
    full_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    log = tmp_path / "killed.log"  # a file, not a pipe that could fill while nobody reads it
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, RUN_PY, *TRAIN, "--workdir", f"gs://{GCS_BUCKET}/killed"],
                                cwd=REPO, env={**full_env, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(n.startswith("killed/checkpoints/12/") for n in _names(gcs, "killed/checkpoints/")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(2)  # a little past the checkpoint: metrics lines after it are dropped on resume
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = json.loads(_read(gcs, "killed/.lock"))
    assert lock["pid"] == proc.pid and lock["host"] == socket.gethostname()
    cut = _read(gcs, "killed/metrics.jsonl") or ""
    assert json.loads(cut.splitlines()[-1])["step"] < 30

    resumed = run_cli(*TRAIN, "--workdir", f"gs://{GCS_BUCKET}/killed",
                      env=env, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the stale lock" in resumed.stderr
    assert "resumed from step" in resumed.stderr
    assert _read(gcs, "killed/metrics.jsonl") == expected

    # The tools read the bucket workdir as they read a local one.
    ev = run_cli("eval", "--workdir", f"gs://{GCS_BUCKET}/killed", env=env, timeout=TIMEOUT)
    assert ev.returncode == 0, ev.stderr[-3000:]
    last = json.loads(expected.splitlines()[-1])
    assert json.loads(ev.stdout.splitlines()[-1])["step"] == 30
    assert json.loads(ev.stdout.splitlines()[-1])["eval/accuracy"] == last["eval/accuracy"]
    inspect = run_cli("inspect", f"gs://{GCS_BUCKET}/killed", env=env, timeout=TIMEOUT)
    assert inspect.returncode == 0, inspect.stderr[-3000:]
    assert f"workdir gs://{GCS_BUCKET}/killed" in inspect.stdout
    assert "| 30 |" in inspect.stdout
    assert f"profile traces (tensorboard --logdir gs://{GCS_BUCKET}/killed/profile)" in inspect.stdout
    assert ".xplane.pb" in inspect.stdout
    report = run_cli("report", f"gs://{GCS_BUCKET}/killed", env=env, timeout=TIMEOUT)
    assert report.returncode == 0, report.stderr[-3000:]
    written = _names(gcs, "killed/")
    assert {"killed/report.md", "killed/report.csv", "killed/plots/eval_accuracy.png"} <= written
    assert _bucket(gcs).blob("killed/plots/eval_accuracy.png").download_as_bytes()[:4] == b"\x89PNG"


def test_sample_writes_its_grid_into_the_bucket(gcs, tfds_dir):
    env = _env(gcs, tfds_dir)
    workdir = f"gs://{GCS_BUCKET}/ddpm"
    trained = run_cli("train", "--config", "configs/digits_ddpm.py:runlocal", "--workdir", workdir,
                      "--config.train.steps=2", "--config.train.checkpoint_every=2",
                      "--config.train.eval_every=0", "--config.train.progress=False",
                      env=env, timeout=TIMEOUT)
    assert trained.returncode == 0, trained.stderr[-3000:]
    sampled = run_cli("sample", "--workdir", workdir, env=env, timeout=TIMEOUT)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    pngs = [n for n in _names(gcs, "ddpm/") if n.startswith("ddpm/samples_") and n.endswith(".png")]
    assert len(pngs) == 1 and pngs[0][len("ddpm/"):] in sampled.stdout
    assert _bucket(gcs).blob(pngs[0]).download_as_bytes()[:4] == b"\x89PNG"


def test_local_sweep_into_a_bucket_and_its_report(gcs, tfds_dir):
    env = _env(gcs, tfds_dir)
    sweep_dir = f"gs://{GCS_BUCKET}/sweep"
    run = run_cli("sweep", "--config", "tests/sweep_config.py:two", "--workdir", sweep_dir,
                  env=env, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = [t["name"] for t in json.loads(_read(gcs, "sweep/sweep.json"))["trials"]]
    for name in trials:
        assert json.loads(_read(gcs, f"sweep/{name}/metrics.jsonl").splitlines()[-1])["step"] == 8
        assert "strata: done, step 8" in _read(gcs, f"sweep/{name}/train.log")
    status = run_cli("sweep", "--status", sweep_dir, env=env)
    assert status.returncode == 0 and status.stdout.splitlines()[-1] == "2 trials: 2 done", status
    again = run_cli("sweep", "--config", "tests/sweep_config.py:two", "--workdir", sweep_dir, env=env)
    assert again.returncode == 0 and "2 finished already (skipped), 0 to run" in again.stderr, again.stderr
    report = run_cli("report", sweep_dir, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    table = _read(gcs, "sweep/report.md")
    assert "0.05" in table and "0.2" in table and "sweep/report.csv" in _names(gcs, "sweep/")


def test_missing_bucket_and_unreachable_endpoint_are_one_line_and_write_nothing(gcs, tfds_dir):
    env = _env(gcs, tfds_dir)
    before = {b.name for b in _bucket(gcs).client.list_buckets()}
    line = _one_line_exit_2(run_cli("train", "--config", CONFIG, "--workdir", "gs://no-such-bucket/run",
                                    env=env))
    assert "bucket gs://no-such-bucket does not exist" in line
    for verb in (["eval", "--workdir"], ["inspect"], ["report"], ["sweep", "--status"]):
        _one_line_exit_2(run_cli(*verb, "gs://no-such-bucket/run", env=env))
    assert {b.name for b in _bucket(gcs).client.list_buckets()} == before  # none created

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    unreachable = {**env, "STORAGE_EMULATOR_HOST": closed, "TENSORSTORE_GCS_HTTP_URL": closed}
    line = _one_line_exit_2(run_cli("train", "--config", CONFIG, "--workdir",
                                    f"gs://{GCS_BUCKET}/unreachable", env=unreachable))
    assert f"cannot reach bucket gs://{GCS_BUCKET}" in line
    assert not _names(gcs, "unreachable/")
    line = _one_line_exit_2(run_cli("sweep", "--config", "tests/sweep_config.py:two", "--workdir",
                                    f"gs://{GCS_BUCKET}/sw", "--launcher", "slurm", env=env))
    assert "--launcher slurm needs" in line and not _names(gcs, "sw/")


def test_bucket_lock_refuses_a_live_holder_and_takes_over_a_dead_one(gcs, monkeypatch):
    from errors import ConfigError
    from train import bucket
    for key, value in gcs.items():
        monkeypatch.setenv(key, value)
    url = f"gs://{GCS_BUCKET}/locktest/.lock"
    busy = "busy: {pid} in {folder}"
    first = bucket.BucketLock(url).acquire(busy)
    try:
        holder = json.loads(_read(gcs, "locktest/.lock"))
        assert holder["pid"] == os.getpid() and bucket.held(url)
        with pytest.raises(ConfigError, match=rf"busy: {socket.gethostname()}:{os.getpid()} in gs://"):
            bucket.BucketLock(url).acquire(busy)
        # Create-only-if-absent is what keeps two runs out, even when both saw no lock.
        from google.api_core import exceptions
        with pytest.raises(exceptions.PreconditionFailed):
            _bucket(gcs).blob("locktest/.lock").upload_from_string("x", if_generation_match=0)
    finally:
        first.release()
    assert _read(gcs, "locktest/.lock") is None and not bucket.held(url)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = {"host": socket.gethostname(), "pid": int(dead), "started": 0, "heartbeat": time.time()}
    _bucket(gcs).blob("locktest/.lock").upload_from_string(json.dumps(stale))
    assert bucket.is_stale(stale) and not bucket.held(url)
    bucket.BucketLock(url).acquire(busy).release()
    elsewhere = {"host": "another-host", "pid": 1, "started": 0, "heartbeat": time.time()}
    assert not bucket.is_stale(elsewhere)
    assert bucket.is_stale({**elsewhere, "heartbeat": time.time() - bucket.STALE_S - 1})
