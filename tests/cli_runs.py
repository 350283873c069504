"""Helpers for tests that train through `run.py` in subprocesses, as a user (or a cluster
scheduler) would: start, kill, restart, and compare what the runs left in their workdirs."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

import jax
import numpy as np

from helpers import REPO, RUN_PY, run_cli

# ResNet-8 (width 4) on digits, batch 16, 30 steps: a few seconds on one CPU device. Logs every
# 2 steps and saves every 3, so most checkpoints carry a partial log window; evaluates every
# 6 (2 batches), keeps 2 checkpoints plus the best, and keeps an EMA of the parameters.
TINY = ["--config.model.depth=8", "--config.model.width=4", "--config.train.steps=30",
        "--config.train.batch_size=16", "--config.train.log_every=2",
        "--config.train.eval_every=6", "--config.train.checkpoint_every=3",
        "--config.train.eval_max_batches=2", "--config.train.progress=False",
        "--config.train.ema_decay=0.9", "--config.optimizer.warmup_steps=0",
        "--config.checkpoint.keep=2", "--config.checkpoint.best_metric=eval/loss",
        "--config.checkpoint.best_mode=max",  # the worst loss: an early step, not the latest
        "--config.data.num_threads=1"]
TIMEOUT = 300


def cli_env(tfds_dir: str, **extra: str) -> dict:
    """One CPU device, the session's TFDS dir, and a persistent compilation cache shared by
    all runs (each restart would otherwise spend most of its time compiling the same step)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    cache = os.environ.get("STRATA_TEST_JAX_CACHE") or os.path.join(
        tempfile.gettempdir(), f"strata-test-jax-cache-{os.getuid()}")
    env.update(JAX_PLATFORMS="cpu", TFDS_DATA_DIR=tfds_dir, JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)
    return env


def train_args(workdir, *extra: str) -> list[str]:
    """The run.py arguments of a TINY training run in `workdir`, `extra` appended."""
    return ["train", *TINY, "--workdir", str(workdir), *extra]


def run_train(workdir, *extra: str, env: dict) -> subprocess.CompletedProcess:
    return run_cli(*train_args(workdir, *extra), env=env, timeout=TIMEOUT)


def run_until(args: list[str], env: dict, until: Callable[[], bool], sig: int = signal.SIGKILL,
              log: str | None = None, poll: float = 0.002) -> tuple[int, bool]:
    """Starts `python run.py ARGS`; sends `sig` as soon as `until()` holds. Returns (exit code,
    whether the signal was sent); the signal is not sent if the process ends first."""
    out = open(log, "a") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, RUN_PY, *args], cwd=REPO, env=env, stdout=out,
                            stderr=out, start_new_session=True)
    sent = False
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if until():
                proc.send_signal(sig)
                sent = True
                break
            time.sleep(poll)
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


def metrics(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line being written right now
                pass
    return out


def last_step(workdir) -> int:
    rows = metrics(workdir)
    return rows[-1]["step"] if rows else 0


def checkpoint_steps(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def saving_now(workdir) -> bool:
    """An asynchronous save is under way (Orbax writes into a temporary folder first)."""
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and any(not s.isdigit() for s in os.listdir(d))


def state(workdir, step: int) -> dict:
    """A checkpoint's full train state as numpy arrays."""
    from train.checkpoints import read_state
    return read_state(os.path.join(workdir, "checkpoints", str(step), "state"))


def assert_bit_identical(a, b) -> None:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert x.tobytes() == y.tobytes(), f"{jax.tree_util.keystr(path)} differs"


def snapshot(workdir) -> dict[str, str]:
    """sha256 of every file in checkpoints/ and of metrics.jsonl and config.json."""
    out = {}
    for root, _, files in os.walk(workdir):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), workdir)
            if rel.startswith("checkpoints") or rel in ("metrics.jsonl", "config.json"):
                with open(os.path.join(root, f), "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out
