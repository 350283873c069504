"""Loop overhead: steps/s of `python run.py train` (Grain pipeline, metric logging,
async checkpoints at the config's intervals) against the bare jitted step of the same
config over batches already on the device.

run.py's rate and CPU time are read from the workdir's perf.jsonl (every log window but
the first, which holds compilation). Evaluation is switched off
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

from benchmarks.common import Row, explicit_strata_env, median, step_runner
from benchmarks.worker import REPO, Remote

CONFIG = "configs/digits_resnet.py"


def bare_contender(config_path: str = CONFIG, num_batches: int = 8):
    """run(n): n calls of the jitted train step of `config_path` on device batches."""
    from train import step as step_lib
    from train.sharding import to_global
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
    run = step_runner(step, state, batches)

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


def run_py_train(workdir: str, extra: list[str], environ: dict) -> tuple[list[dict], float]:
    """(the log windows after the first, wall seconds) of one run.py train; a window is
    {"steps", "seconds", "cpu_seconds"} from perf.jsonl."""
    cmd = [sys.executable, "run.py", "train", f"--config={CONFIG}", f"--workdir={workdir}",
           "--config.train.eval_every=0", "--config.train.progress=False", *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"run.py train failed ({done.returncode}): {done.stderr[-2000:]}")
    windows = []
    with open(os.path.join(workdir, "perf.jsonl")) as f:
        for line in filter(str.strip, f):
            row = json.loads(line)
            windows.append({"steps": round(row["perf/steps_per_sec"] * row["perf/seconds"]),
                            "seconds": row["perf/seconds"], "cpu_seconds": row["perf/cpu_seconds"]})
    return windows[1:], wall


def run(runs: int = 3, bare_steps: int = 100, extra: list[str] | None = None) -> list[Row]:
    # Both sides get Strata's CPU defaults through the environment, whether or not run.py
    # applies them itself, so the ratio is the loop's own overhead. The bare step is timed
    # right before and after each run.py run; each run is compared with those two.
    strata_env = explicit_strata_env()
    wall_ratios, cpu_ratios, walls, rates, bare_rates = [], [], [], [], []
    with Remote("benchmarks.loop:bare_contender", {"config_path": CONFIG}, env=strata_env) as step:
        step(10)  # compile and warm up
        before = (bare_steps / step(bare_steps), step.cpu_seconds[-1])
        for _ in range(runs):
            workdir = tempfile.mkdtemp(prefix="strata-bench-loop-")
            try:
                windows, wall = run_py_train(workdir, extra or [], strata_env)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            after = (bare_steps / step(bare_steps), step.cpu_seconds[-1])
            steps = sum(w["steps"] for w in windows)
            rate = steps / sum(w["seconds"] for w in windows)
            cpu = sum(w["cpu_seconds"] for w in windows) / steps
            bare_rate, bare_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            wall_ratios.append(rate / bare_rate)
            cpu_ratios.append(bare_cpu / cpu)
            walls.append(wall)
            rates.append(rate)
            bare_rates.append(bare_rate)
            before = after
    return [Row("loop", f"`run.py train` {CONFIG}: steps/s over all log windows but the first "
                        f"vs the bare jitted step on device batches, timed just before and after "
                        f"each of {runs} runs",
                f"{median(rates):.1f} steps/s", f"bare step: {median(bare_rates):.1f} steps/s",
                f"{median(wall_ratios):.1%} (per run: {', '.join(f'{r:.1%}' for r in wall_ratios)})",
                "goal >= 97%; Grain pipeline + logging + async checkpoints at the config's intervals, "
                "eval off; both with Strata's CPU defaults; "
                f"run.py wall time incl. start-up, compile, final eval: {median(walls):.0f} s"),
            Row("loop", "same, process CPU seconds per step (all threads): bare / run.py",
                "", "", f"{median(cpu_ratios):.1%} (per run: {', '.join(f'{r:.1%}' for r in cpu_ratios)})",
                "the work the loop adds, insensitive to other load on the machine")]
