"""End to end: from the command to the final validation loss, Strata's `run.py train`
against a plain PyTorch script of the same model, optimizer, schedule and data order.

    python -m benchmarks.end_to_end [--pairs 3] [--steps 2000]

The workload (issue 16): a byte-level GPT, 4 layers, width 128, 4 heads, learned positions,
context 64, batch 12, AdamW 3e-3 with 50 warm-up steps then cosine, clipping 1.0, decay 0.1;
`--steps` steps on a 1 MiB text file (the first 1 MiB of the Python standard library's
sources, sorted by path), evaluation over the whole validation tail (the file's last 10%)
at the end. Strata: `run.py train --config configs/text_gpt.py` with those overrides, the
file as a `text_files` dataset, a checkpoint at the end (what a user gets); PyTorch:
benchmarks/torch_lm_train.py.

First one cold Strata run (TFDS preparation of the file and an empty compilation cache),
then `--pairs` pairs timed interleaved (the order alternating), Strata with its warm
compilation cache: what a researcher's second and later runs cost. Each side's wall time
is split into phases: Strata's from perf.jsonl (start-up = command to the first step;
steps = the log windows, the first of which holds the train-step compilation; the rest =
final evaluation, checkpoint and exit), PyTorch's as the script times them.
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


def strata(text: str, steps: int, scratch: str, cache: str) -> dict:
    workdir = tempfile.mkdtemp(prefix="run-", dir=scratch)
    s = SHAPES
    cmd = [sys.executable, "run.py", "train", "--config=configs/text_gpt.py", f"--workdir={workdir}",
           "--config.data.name=text_files", f"--config.data.files={text}",
           f"--config.data.data_dir={os.path.join(scratch, 'tfds')}",
           f"--config.data.seq_len={s['seq_len']}", f"--config.model.max_len={s['seq_len']}",
           f"--config.model.num_layers={s['layers']}", f"--config.model.width={s['width']}",
           f"--config.model.num_heads={s['heads']}", "--config.model.positions=learned",
           f"--config.train.batch_size={s['batch']}", f"--config.train.steps={steps}",
           "--config.train.eval_every=0", "--config.train.checkpoint_every=0",
           f"--config.train.log_every={max(steps // 4, 1)}", "--config.train.progress=False"]
    done, start, wall, cpu = _timed(cmd, {**os.environ, "STRATA_COMPILE_CACHE": cache})
    with open(os.path.join(workdir, "perf.jsonl")) as f:
        perf = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        final = [json.loads(line) for line in f if line.strip()][-1]
    loop_start = perf[0]["time"] - perf[0]["perf/seconds"]
    steps_s = sum(row["perf/seconds"] for row in perf)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "val_loss": final["eval/loss"],
            "phases": {"start-up": loop_start - start, "steps": steps_s,
                       "eval+ckpt+exit": wall - (loop_start - start) - steps_s}}


def pytorch(text: str, steps: int) -> dict:
    s = SHAPES
    cmd = [sys.executable, "-m", "benchmarks.torch_lm_train", "--file", text, "--steps", str(steps),
           "--batch", str(s["batch"]), "--seq_len", str(s["seq_len"]), "--layers", str(s["layers"]),
           "--width", str(s["width"]), "--heads", str(s["heads"])]
    done, _, wall, cpu = _timed(cmd, dict(os.environ))
    out = json.loads(done.stdout.strip().splitlines()[-1])
    p = out["phases"]
    return {"wall": wall, "cpu": cpu, "val_loss": out["val_loss"],
            "phases": {"start-up": p["imports"] + p["setup"], "steps": p["steps"],
                       "eval+ckpt+exit": wall - p["imports"] - p["setup"] - p["steps"]}}


def _phases(r: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())


def run(pairs: int = 3, steps: int = 2000) -> list[Row]:
    if not torch_installed():
        return [Row("e2e", "skipped", "", note=NO_TORCH)]
    scratch = tempfile.mkdtemp(prefix="strata-bench-e2e-")
    try:
        text = make_text(os.path.join(scratch, "input.txt"))
        cache = os.path.join(scratch, "xla-cache")
        cold = strata(text, steps, scratch, cache)
        results: dict[str, list[dict]] = {"strata": [], "pytorch": []}
        for i in range(pairs):
            for side in (("strata", "pytorch") if i % 2 == 0 else ("pytorch", "strata")):
                results[side].append(strata(text, steps, scratch, cache) if side == "strata"
                                     else pytorch(text, steps))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    s, p = results["strata"], results["pytorch"]
    ratios = [a["wall"] / b["wall"] for a, b in zip(s, p)]
    what = (f"byte GPT {SHAPES['layers']}x{SHAPES['width']}, context {SHAPES['seq_len']}, batch "
            f"{SHAPES['batch']}, {steps} steps on 1 MiB of text, command to final validation loss")
    rows = [Row("e2e", what + f", {pairs} interleaved pairs (Strata: warm compilation cache)",
                f"{median([r['wall'] for r in s]):.1f} s wall, {median([r['cpu'] for r in s]):.0f} s CPU",
                f"{median([r['wall'] for r in p]):.1f} s wall, {median([r['cpu'] for r in p]):.0f} s CPU",
                f"{median(ratios):.2f}x (per pair: {', '.join(f'{r:.2f}' for r in ratios)})",
                f"goal <= 0.80x; validation loss Strata {median([r['val_loss'] for r in s]):.4f} vs "
                f"PyTorch {median([r['val_loss'] for r in p]):.4f} nats/byte")]
    for side, runs in (("Strata", s), ("PyTorch", p)):
        rows.append(Row("e2e", f"{side} phases, seconds (each run)", "; ".join(_phases(r) for r in runs)))
    rows.append(Row("e2e", "Strata's first run: TFDS preparation of the file, empty compilation cache",
                    f"{cold['wall']:.1f} s wall, {cold['cpu']:.0f} s CPU", note=_phases(cold)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    load = load_average()
    for row in run(args.pairs, args.steps):
        print(f"| {row.part} | {row.what} | {row.strata} | {row.reference} | {row.ratio} | {row.note} |")
    print(f"load average before: {load}, after: {load_average()}")


if __name__ == "__main__":
    main()
