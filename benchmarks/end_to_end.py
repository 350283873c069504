"""End to end: from the command to the final validation metric, Strata's `run.py train`
against a plain PyTorch script of the same model, optimizer, schedule and data order.

    python -m benchmarks.end_to_end [--pairs 3] [--only lm,digits] [--steps N]

Workloads (issue 16):
- `lm`: a byte-level GPT, 4 layers, width 128, 4 heads, learned positions, context 64,
  batch 12, AdamW 3e-3 with 50 warm-up steps then cosine, clipping 1.0, decay 0.1; 2000
  steps on a 1 MiB text file (the first 1 MiB of the Python standard library's sources,
  sorted by path), evaluation over the whole validation tail (the file's last 10%) at the
  end. Strata: `run.py train --config configs/text_gpt.py` with those overrides and the file
  as a `text_files` dataset; PyTorch: benchmarks/torch_lm_train.py.
- `digits`: `run.py train --config configs/digits_resnet.py` as it is (600 steps, test
  accuracy and a checkpoint every 200 steps); PyTorch: benchmarks/torch_digits_train.py.

Per workload: first one cold Strata run (TFDS preparation and an empty compilation cache),
then `--pairs` pairs timed interleaved (the order alternating), Strata with its warm
compilation cache: what a researcher's second and later runs cost. Pair i trains with seed
i on both sides (initialisation and data order), so the final metrics are compared as
means over seeds, not as one seed's draw (on 360 test images one image is 0.28 points). Each side's wall time
is split into phases: Strata's from perf.jsonl (start-up = command to the first step;
steps = the log windows, the first of which holds the train-step compilation, and any
evaluations and saves during training; the rest = final evaluation, checkpoint and exit),
PyTorch's as the script times them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

from benchmarks.common import NO_TORCH, Row, load_average, median, torch_installed
from benchmarks.worker import REPO

SHAPES = {"layers": 4, "width": 128, "heads": 4, "seq_len": 64, "batch": 12}


def make_text(path: str, size: int = 1 << 20) -> str:
    """The first `size` bytes of the standard library's .py files, in sorted path order."""
    root, out = sysconfig.get_paths()["stdlib"], bytearray()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        if any(skip in directory for skip in ("site-packages", "test", "__pycache__")):
            continue
        for name in sorted(files):
            if name.endswith(".py") and len(out) < size:
                with open(os.path.join(directory, name), "rb") as f:
                    out += f.read()
    with open(path, "wb") as f:
        f.write(bytes(out[:size]))
    return path


def _timed(cmd: list[str], environ: dict) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """(the finished process, its start as unix time, wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_unix, t = time.time(), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done, start_unix, wall, cpu


def lm_commands(scratch: str, steps: int) -> tuple[list[str], list[str]]:
    """(Strata's run.py arguments, the PyTorch script's command) of the byte-GPT workload."""
    text = os.path.join(scratch, "input.txt")
    if not os.path.exists(text):
        make_text(text)
    s = SHAPES
    strata_args = [
        "--config=configs/text_gpt.py", "--config.data.name=text_files", f"--config.data.files={text}",
        f"--config.data.seq_len={s['seq_len']}", f"--config.model.max_len={s['seq_len']}",
        f"--config.model.num_layers={s['layers']}", f"--config.model.width={s['width']}",
        f"--config.model.num_heads={s['heads']}", "--config.model.positions=learned",
        f"--config.train.batch_size={s['batch']}", f"--config.train.steps={steps}",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=0",
        f"--config.train.log_every={max(steps // 4, 1)}"]
    torch_cmd = [sys.executable, "-m", "benchmarks.torch_lm_train", "--file", text, "--steps", str(steps),
                 "--batch", str(s["batch"]), "--seq_len", str(s["seq_len"]), "--layers", str(s["layers"]),
                 "--width", str(s["width"]), "--heads", str(s["heads"])]
    return strata_args, torch_cmd


def digits_commands(scratch: str, steps: int) -> tuple[list[str], list[str]]:
    """`configs/digits_resnet.py` as it is (evaluation and checkpoints every 200 steps)."""
    return (["--config=configs/digits_resnet.py", f"--config.train.steps={steps}"],
            [sys.executable, "-m", "benchmarks.torch_digits_train", "--steps", str(steps)])


# name -> (commands, Strata's final metric, the PyTorch script's, what is run, default steps)
WORKLOADS = {
    "lm": (lm_commands, "eval/loss", "val_loss",
           f"byte GPT {SHAPES['layers']}x{SHAPES['width']}, context {SHAPES['seq_len']}, batch "
           f"{SHAPES['batch']}, on 1 MiB of text", 2000),
    "digits": (digits_commands, "eval/accuracy", "accuracy",
               "configs/digits_resnet.py (ResNet-20, batch 128, eval + checkpoint every 200 steps)", 600),
}


def strata(args: list[str], scratch: str, cache: str, metric: str) -> dict:
    workdir = tempfile.mkdtemp(prefix="run-", dir=scratch)
    cmd = [sys.executable, "run.py", "train", *args, f"--workdir={workdir}",
           f"--config.data.data_dir={os.path.join(scratch, 'tfds')}", "--config.train.progress=False"]
    done, start, wall, cpu = _timed(cmd, {**os.environ, "STRATA_COMPILE_CACHE": cache})
    with open(os.path.join(workdir, "perf.jsonl")) as f:
        perf = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        final = [json.loads(line) for line in f if line.strip()][-1]
    loop_start = perf[0]["time"] - perf[0]["perf/seconds"]
    steps_s = sum(row["perf/seconds"] for row in perf)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "metric": final[metric],
            "phases": {"start-up": loop_start - start, "steps": steps_s,
                       "final eval+ckpt+exit": wall - (loop_start - start) - steps_s}}


def pytorch(cmd: list[str], metric: str) -> dict:
    done, _, wall, cpu = _timed(cmd, dict(os.environ))
    out = json.loads(done.stdout.strip().splitlines()[-1])
    p = out["phases"]
    startup = p.pop("imports") + p.pop("setup")
    return {"wall": wall, "cpu": cpu, "metric": out[metric],
            "phases": {"start-up": startup, **p, "exit": wall - startup - sum(p.values())}}


def _phases(r: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())


def run(pairs: int = 3, steps: int = 0, workloads: str = "lm,digits") -> list[Row]:
    """Rows per workload; `steps` 0 = each workload's default (2000 LM, 600 digits)."""
    if not torch_installed():
        return [Row("e2e", "skipped", "", note=NO_TORCH)]
    rows = []
    for name in workloads.split(","):
        commands, strata_metric, torch_metric, what, default_steps = WORKLOADS[name]
        n = steps or default_steps
        scratch = tempfile.mkdtemp(prefix="strata-bench-e2e-")
        try:
            strata_args, torch_cmd = commands(scratch, n)
            cache = os.path.join(scratch, "xla-cache")
            cold = strata(strata_args, scratch, cache, strata_metric)
            results: dict[str, list[dict]] = {"strata": [], "pytorch": []}
            for i in range(pairs):
                for side in (("strata", "pytorch") if i % 2 == 0 else ("pytorch", "strata")):
                    results[side].append(
                        strata([*strata_args, f"--config.seed={i}"], scratch, cache, strata_metric)
                        if side == "strata" else pytorch([*torch_cmd, "--seed", str(i)], torch_metric))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        rows += _rows(name, what, n, pairs, results, cold)
    return rows


def _metrics(runs: list[dict]) -> str:
    """'mean m (seed 0, seed 1, ...)'."""
    values = [r["metric"] for r in runs]
    return f"mean {sum(values) / len(values):.4f} ({', '.join(f'{v:.4f}' for v in values)})"


def _rows(name: str, what: str, steps: int, pairs: int, results: dict, cold: dict) -> list[Row]:
    s, p = results["strata"], results["pytorch"]
    ratios = [a["wall"] / b["wall"] for a, b in zip(s, p)]
    rows = [Row("e2e", f"{what}, {steps} steps, command to final metric, {pairs} interleaved pairs "
                       "(Strata: warm compilation cache)",
                f"{median([r['wall'] for r in s]):.1f} s wall, {median([r['cpu'] for r in s]):.0f} s CPU",
                f"{median([r['wall'] for r in p]):.1f} s wall, {median([r['cpu'] for r in p]):.0f} s CPU",
                f"{median(ratios):.2f}x (per pair: {', '.join(f'{r:.2f}' for r in ratios)})",
                f"final {WORKLOADS[name][1]} over seeds 0..{pairs - 1}: Strata {_metrics(s)}; "
                f"PyTorch {_metrics(p)}")]
    for side, runs in (("Strata", s), ("PyTorch", p)):
        rows.append(Row("e2e", f"{name}: {side} phases, seconds (each run)", "; ".join(_phases(r) for r in runs)))
    rows.append(Row("e2e", f"{name}: Strata's first run (TFDS preparation, empty compilation cache)",
                    f"{cold['wall']:.1f} s wall, {cold['cpu']:.0f} s CPU", note=_phases(cold)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="0 = each workload's default")
    p.add_argument("--only", default="lm,digits", help=f"workloads: {', '.join(WORKLOADS)}")
    args = p.parse_args()
    load = load_average()
    for row in run(args.pairs, args.steps, args.only):
        print(f"| {row.part} | {row.what} | {row.strata} | {row.reference} | {row.ratio} | {row.note} |")
    print(f"load average before: {load}, after: {load_average()}")


if __name__ == "__main__":
    main()
