"""Compile time and CPU step time of each recipe's real train step at a small batch.

    python -m benchmarks.recipe_steps [--batch 8] [--steps 5] [--write] [NAME ...]

For each recipe config (the exact `get_config("")`, global batch `--batch`), builds what
`run.py train` builds (train/loop.py: Experiment, its train iterator, `jit_train_step`
with the config's EMA and `grad_accum=1`), on one CPU device, with Strata's CPU defaults
(train/xla_defaults.py, as run.py applies them) and without the persistent compile cache,
so that compiling is measured cold. Reported: seconds to lower and compile the step, and
the median wall and process-CPU seconds of `--steps` steps after one warm-up step.

Data: image recipes read TFDS mock data (`tfds.testing.mock_data`, the real decode and
augmentation ops at the real resolution); text recipes, whose tokenizers cannot be trained
or downloaded here, read their `:runlocal` embedded text with the `bytes` tokenizer at the
recipe's sequence length and vocabulary (a step's cost does not depend on the token ids).
`--write` appends the table to benchmarks/results.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

IMAGE = ("cifar10_resnet56", "imagenet_resnet50", "imagenet_vit_s16", "cifar10_ddpm")
TEXT = ("wmt14_transformer_base", "lm1b_gpt", "openwebtext_gpt2_124m", "shakespeare_char")
TEXT_DATA_KEYS = ("name", "train_split", "eval_split", "text_key", "inputs_key", "targets_key", "files")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")


def recipe_config(name: str, batch: int, data_dir: str):
    """The recipe's config at global batch `batch`, on data that exists here (see above)."""
    import importlib

    from train import checks
    module = importlib.import_module(f"configs.{name}")
    c = module.get_config("")
    if name in TEXT:
        local = module.get_config("runlocal").data
        for key in TEXT_DATA_KEYS:
            if key in local:
                c.data[key] = local[key]
        c.data.tokenizer = "bytes"
    c.data.data_dir = data_dir
    c.train.batch_size = batch
    c.train.grad_accum = 1  # a recipe's accumulation (GPT-2: 40) does not divide batch 8
    c.train.progress = False
    checks.check_config(c)
    checks.resolve(c)
    checks.check_buildable(c)
    return c


def measure(name: str, batch: int, steps: int, data_dir: str) -> dict:
    """{params, compile_s, step_s, step_cpu_s} of one recipe's train step."""
    import contextlib
    import shutil

    import jax
    import numpy as np
    import tensorflow_datasets as tfds

    from train import step as step_lib
    from train.loop import Experiment
    from train.sharding import to_global
    from train.state import count_params
    c = recipe_config(name, batch, data_dir)
    mock = tfds.testing.mock_data(num_examples=4 * batch, policy=tfds.testing.MockPolicy.USE_CODE) \
        if name in IMAGE else contextlib.nullcontext()
    workdir = tempfile.mkdtemp(prefix="strata-bench-steps-")
    try:
        with mock:
            exp = Experiment(c, workdir)
            it = exp.train_iterator()
            batches = [to_global(next(it), exp.mesh) for _ in range(2)]
        exp.checkpointer.close()
        state = exp.fresh_state()
        step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings,
                                       exp.batch_sharding, ema_decay=c.train.ema_decay, grad_accum=1)
        t, cpu = time.perf_counter(), time.process_time()
        compiled = step.lower(state, batches[0]).compile()
        compile_s, compile_cpu = time.perf_counter() - t, time.process_time() - cpu
        state, _ = compiled(state, batches[0])  # warm-up
        jax.block_until_ready(state)
        walls, cpus = [], []
        for i in range(steps):
            t, cpu = time.perf_counter(), time.process_time()
            state, metrics = compiled(state, batches[i % 2])
            jax.block_until_ready((state, metrics))
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - cpu)
        return {"params": count_params(exp.abstract_state.params), "compile_s": compile_s,
                "compile_cpu_s": compile_cpu, "step_s": float(np.median(walls)),
                "step_cpu_s": float(np.median(cpus)), "dtype": c.model.get("dtype", "float32"),
                "shape": {k: tuple(v.shape) for k, v in batches[0].items()}}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[*IMAGE, *TEXT])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/results.md")
    args = parser.parse_args()
    os.environ["STRATA_COMPILE_CACHE"] = "0"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from train import xla_defaults
    xla_defaults.apply_cpu_defaults()  # what run.py does before JAX starts
    xla_defaults.tune_host_allocator()
    import jax
    from benchmarks.common import load_average
    assert jax.device_count() == 1, "run without simulated devices (XLA_FLAGS host device count)"
    loads = [load_average()]
    start_cpu, start = time.process_time(), time.perf_counter()
    lines = [f"| recipe (batch {args.batch}, 1 CPU device) | params | model dtype | compile s (CPU s) | "
             f"step s, median of {args.steps} | step CPU s |", "|---|---:|---|---:|---:|---:|"]
    data_dir = tempfile.mkdtemp(prefix="strata-bench-tfds-")
    out = open(RESULTS, "a") if args.write else None
    if out:  # rows go in as they are measured: a long run cut short keeps what it measured
        out.write("\n## Recipe train steps (benchmarks/recipe_steps.py)\n\n" + "\n".join(lines) + "\n")
    for name in args.names:
        r = measure(name, args.batch, args.steps, data_dir)
        loads.append(load_average())
        lines.append(f"| `{name}` | {r['params']:,d} | {r['dtype']} | {r['compile_s']:.1f} "
                     f"({r['compile_cpu_s']:.1f}) | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} |")
        print(lines[-1], " batch:", r["shape"], flush=True)
        if out:
            out.write(lines[-1] + "\n")
            out.flush()
    command = "python -m benchmarks.recipe_steps " + " ".join(sys.argv[1:])
    footer = (f"Command: `{command.strip()}`; load average (1/5/15 min) at the start and after "
              f"each recipe: {'; '.join(loads)}; whole run {time.perf_counter() - start:.0f} s wall, "
              f"{time.process_time() - start_cpu:.0f} s CPU.")
    print(footer)
    if out:
        out.write("\n" + footer + "\n")
        out.close()

if __name__ == "__main__":
    main()
