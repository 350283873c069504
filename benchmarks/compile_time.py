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

    def measure(path: str) -> dict:
        import jax

        from benchmarks.loop import _load_config
        from train import checkpoints, step as step_lib
        from train.sharding import to_global
        from train.loop import Experiment
        config = _load_config(path)
        workdir = tempfile.mkdtemp(prefix="strata-bench-compile-")
        try:
            exp = Experiment(config, workdir)
            batch = to_global(next(exp.train_iterator()), exp.mesh)
            abstract = checkpoints.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
            step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings,
                                           exp.batch_sharding, ema_decay=config.train.get("ema_decay", 0.0),
                                           grad_accum=config.train.get("grad_accum", 1))
            t = time.perf_counter()
            lowered = step.lower(abstract, batch)
            t_lower = time.perf_counter() - t
            lowered.compile()
            t_total = time.perf_counter() - t
            exp.checkpointer.close()
            params = sum(int(x.size) for x in jax.tree.leaves(exp.abstract_state.params))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return {"lower": t_lower, "total": t_total, "params": params, "model": config.model.name,
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
    return rows
