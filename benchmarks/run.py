"""Strata's side-by-side benchmarks: one command, one machine, one process tree.

    python -m benchmarks.run                    # everything, ~40 min on a quiet 2-core CPU
    python -m benchmarks.run --only lm,cnn      # some parts
    python -m benchmarks.run --quick            # fewer repeats: a smoke run, noisier
    python -m benchmarks.run --only e2e         # command to final metric vs a PyTorch script

Prints a Markdown table (a full run also writes it to benchmarks/results.md; a run with
`--only` writes only where `--out` says, so it cannot replace the full table): medians of several
timed repeats after warm-up, the ratio to the reference, the machine, the package versions
and the load average. Each contender runs in its own worker process (benchmarks/worker.py):
Strata's with the CPU defaults run.py applies (train/xla_defaults.py), the PyTorch
reference and the "no defaults" ablation without them; contenders that are compared are
timed interleaved (alternating repeats), so load from other processes hits them alike.
Read the ratios, not the absolute numbers, on a shared machine. PyTorch columns need the
`bench` extra (`pip install -e '.[bench]'`, i.e. torch==2.13.0) and are skipped without it.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from benchmarks.common import NO_TORCH, Row, load_average, machine, markdown, torch_installed

# part -> (module, keyword arguments for a full run, for --quick)
PARTS: dict[str, tuple[str, dict, dict]] = {
    "lm": ("benchmarks.lm", dict(repeats=7, steps=10), dict(repeats=3, steps=5)),
    "cnn": ("benchmarks.cnn", dict(repeats=3, steps=1), dict(repeats=1, steps=1, ablate=False)),
    "loop": ("benchmarks.loop", dict(runs=3, bare_steps=100), dict(runs=1, bare_steps=30)),
    "ckpt": ("benchmarks.ckpt", dict(repeats=3), dict(repeats=2)),
    "compile": ("benchmarks.compile_time", dict(), dict()),
    "sample": ("benchmarks.sampling", dict(repeats=3), dict(repeats=2)),
    "e2e": ("benchmarks.end_to_end", dict(pairs=3), dict(pairs=1, steps=100)),
    "lora": ("benchmarks.lora", dict(repeats=5, steps=3), dict(repeats=2, steps=1)),
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; noisier numbers)")
    p.add_argument("--out", default=None, help="where to write the Markdown table ('' = nowhere; "
                   "default: benchmarks/results.md for a full run, nowhere with --only)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "" if args.only else OUT
    args.parts = [s.strip() for s in args.only.split(",") if s.strip()] or list(PARTS)
    unknown = [s for s in args.parts if s not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}. Valid: {', '.join(PARTS)}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    rows: list[Row] = []
    loads = [load_average()]
    started = time.perf_counter()
    if not torch_installed():
        print(f"benchmarks: {NO_TORCH}", file=sys.stderr)
    for part in args.parts:
        module, full, quick = PARTS[part]
        print(f"benchmarks: {part} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            part_rows = importlib.import_module(module).run(**(quick if args.quick else full))
        except Exception as e:  # one failing part should not cost the others' numbers
            part_rows = [Row(part, "failed", "", note=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")]
        rows += part_rows
        loads.append(load_average())
        print(f"benchmarks: {part} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    command = "python -m benchmarks.run" + (f" --only {','.join(args.parts)}" if args.only else "") + (
        " --quick" if args.quick else "")
    info = machine()
    info["total time"] = f"{time.perf_counter() - started:.0f} s"
    text = markdown(rows, info, loads, command)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Strata benchmark results\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
