"""Loop overhead: steps/s of `python run.py train` (Grain pipeline, metric logging,
async checkpoints at the config's intervals) against the bare jitted step of the same
config over batches already on the device.

run.py's rate is read from the workdir's perf.jsonl (`perf/steps_per_sec` of every log
window); the first window (compilation) is left out. Evaluation is switched off
(`train.eval_every=0`) so the windows hold training only; the final evaluation runs after
the last window. The bare step is timed before, between and after the run.py runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.common import Row, explicit_strata_env, median
from benchmarks.worker import REPO, Remote

CONFIG = "configs/digits_resnet.py"


def bare_contender(config_path: str = CONFIG, num_batches: int = 8):
    """run(n): n calls of the jitted train step of `config_path` on device batches."""
    import jax

    from train import step as step_lib
    from train.evaluate import to_global
    from train.loop import Experiment
    config = _load_config(config_path)
    workdir = tempfile.mkdtemp(prefix="strata-bench-bare-")
    exp = Experiment(config, workdir)
    exp.checkpointer.close()
    shutil.rmtree(workdir, ignore_errors=True)
    it = exp.train_iterator()
    batches = [to_global(next(it), exp.mesh) for _ in range(num_batches)]
    state = exp.fresh_state()
    step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding,
                                   ema_decay=config.train.get("ema_decay", 0.0),
                                   grad_accum=config.train.get("grad_accum", 1))
    holder = {"state": state}

    def run(k):
        s = holder["state"]
        for i in range(k):
            s, metrics = step(s, batches[i % len(batches)])
        jax.block_until_ready(s)
        holder["state"] = s
    def pipeline(n: int = 100) -> dict:
        """The Grain pipeline alone: wall and process CPU seconds per batch."""
        import time
        for _ in range(5):
            next(it)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            to_global(next(it), exp.mesh)
        return {"wall": (time.perf_counter() - t) / n, "cpu": (time.process_time() - c) / n}

    run.extras = {"pipeline": pipeline}
    return run


def _load_config(path: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run_py_train(workdir: str, extra: list[str], environ: dict) -> tuple[list[float], float]:
    """(steps/s of each log window after the first, wall seconds) of one run.py train."""
    cmd = [sys.executable, "run.py", "train", f"--config={CONFIG}", f"--workdir={workdir}",
           "--config.train.eval_every=0", "--config.train.progress=False", *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"run.py train failed ({done.returncode}): {done.stderr[-2000:]}")
    with open(os.path.join(workdir, "perf.jsonl")) as f:
        rates = [json.loads(line)["perf/steps_per_sec"] for line in f if line.strip()]
    return rates[1:], wall


def run(runs: int = 2, bare_steps: int = 100, extra: list[str] | None = None) -> list[Row]:
    # Both sides get Strata's CPU defaults through the environment, whether or not run.py
    # applies them itself yet, so the ratio is the loop's own overhead.
    strata_env = explicit_strata_env()
    windows, walls, bare = [], [], []
    with Remote("benchmarks.loop:bare_contender", {"config_path": CONFIG}, env=strata_env) as step:
        step(10)  # compile and warm up
        bare.append(bare_steps / step(bare_steps))
        for _ in range(runs):
            workdir = tempfile.mkdtemp(prefix="strata-bench-loop-")
            try:
                rates, wall = run_py_train(workdir, extra or [], strata_env)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            windows += rates
            walls.append(wall)
            bare.append(bare_steps / step(bare_steps))
        data = step.call("pipeline")
    # Every window holds log_every steps: the overall rate is the harmonic mean.
    overall = len(windows) / sum(1.0 / r for r in windows)
    bare_rate = median(bare)
    return [Row("loop", f"`run.py train` {CONFIG}: steps/s over all log windows but the first "
                        f"({len(windows)} windows, {runs} run(s)) vs the bare jitted step on device batches",
                f"{overall:.1f} steps/s (median window {median(windows):.1f})",
                f"bare step: {bare_rate:.1f} steps/s", f"{overall / bare_rate:.1%}",
                "goal >= 97%; Grain pipeline + logging + async checkpoints at the config's intervals, "
                "eval off; both with Strata's CPU defaults; "
                f"run.py wall time incl. start-up, compile, final eval: {median(walls):.0f} s")]
