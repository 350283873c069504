"""Compile time of each embedded config's train step: `jit_train_step(...).lower(...)
.compile()` on the config's real shapes (trace + XLA compile), in one Strata process."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time

from benchmarks.common import Row, env
from benchmarks.worker import REPO, Remote


def configs() -> list[str]:
    """Every configs/*.py with a get_config (common.py is not a config)."""
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        with open(path) as f:
            if "def get_config" in f.read():
                out.append(os.path.relpath(path, REPO))
    return out


def compile_worker():
    def run(k):
        pass

    def measure(path: str, overrides: dict | None = None) -> dict:
        import jax

        from benchmarks.loop import _load_config
        from train import checkpoints, step as step_lib
        from train.sharding import to_global
        from train.loop import Experiment
        config = _load_config(path)
        for key, value in (overrides or {}).items():
            section, field = key.split(".")
            config[section][field] = value
        workdir = tempfile.mkdtemp(prefix="strata-bench-compile-")
        try:
            exp = Experiment(config, workdir)
            batch = to_global(next(exp.train_iterator()), exp.mesh)
            abstract = checkpoints.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
            step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings,
                                           exp.batch_sharding, ema_decay=config.train.get("ema_decay", 0.0),
                                           grad_accum=config.train.get("grad_accum", 1))
            t, cpu = time.perf_counter(), time.process_time()
            lowered = step.lower(abstract, batch)
            t_lower = time.perf_counter() - t
            lowered.compile()
            t_total, cpu = time.perf_counter() - t, time.process_time() - cpu
            exp.checkpointer.close()
            params = sum(int(x.size) for x in jax.tree.leaves(exp.abstract_state.params))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return {"lower": t_lower, "total": t_total, "cpu": cpu, "params": params, "model": config.model.name,
                "batch": config.train.batch_size}

    run.extras = {"measure": measure}
    return run


def run() -> list[Row]:
    rows = []
    with Remote("benchmarks.compile_time:compile_worker", env=env()) as w:
        for path in configs():
            m = w.call("measure", path=path)
            rows.append(Row("compile", f"{path} train step ({m['model']}, {m['params']:,} params, "
                                       f"batch {m['batch']})",
                            f"{m['total']:.1f} s", note=f"trace + lower {m['lower']:.1f} s, rest XLA compile"))
        # Depth: a GPT-2-small body (12 layers, width 768) on text_gpt's data, per-layer
        # blocks against one nn.scan over stacked blocks (model.scan_layers).
        deep = {"model.num_layers": 12, "model.width": 768, "model.num_heads": 12, "train.batch_size": 8}
        times = {}
        for scan in (False, True):
            m = w.call("measure", path="configs/text_gpt.py", overrides={**deep, "model.scan_layers": scan})
            times[scan] = m["total"]
            rows.append(Row("compile", f"GPT 12 layers x 768 (text_gpt data, {m['params']:,} params, batch 8), "
                                       f"scan_layers={scan}", f"{m['total']:.1f} s",
                            note=f"trace + lower {m['lower']:.1f} s, rest XLA compile"
                                 + (f"; {times[False] / m['total']:.1f}x less than unscanned" if scan else "")))
    return rows
