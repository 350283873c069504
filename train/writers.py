"""Metric writers: DIR/metrics.jsonl, TensorBoard event files (when `train.trackers` has
"tensorboard"), the other trackers of train/trackers.py (W&B), a console progress bar.

Only process 0 writes. `metrics.jsonl` holds one JSON object per line,
`{"step": N, "train/loss": ..., "eval/accuracy": ...}`, each step at most once: on
resume, lines after the restored step are dropped before new ones are appended. Timings
go to DIR/perf.jsonl, so metrics.jsonl is identical for identical runs.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Sequence

import jax

from train import files


def _clean(value: Any) -> Any:
    value = float(value)
    return value if math.isfinite(value) else str(value)


def truncate_metrics(path: str, last_step: int) -> None:
    """Drops lines with step > last_step (written after the checkpoint we resume from)."""
    if not files.exists(path):
        return
    lines = [l for l in files.read_text(path).splitlines(keepends=True) if l.strip()]
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError):
            continue  # a line cut short by a crash
    files.write_text(path, "".join(keep))


def _import_summary_writer():
    """tensorboardX's SummaryWriter, without the PyTorch import it attempts when torch is
    installed (the benchmarks' extra): seconds of start-up that scalars never need."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


def read_metrics(path: str) -> list[dict]:
    """All complete lines of a metrics.jsonl file."""
    out = []
    if files.exists(path):
        for line in files.read_text(path).splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class MetricWriter:
    """Writes scalars to metrics.jsonl and TensorBoard, and drives the progress bar."""

    def __init__(self, workdir: str, total_steps: int, start_step: int, enabled: bool | None = None,
                 progress: bool = True, trackers: Sequence[str] = ("tensorboard",)):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self._bar = None
        self._trackers: list[Any] = []
        if not self.enabled:
            return
        truncate_metrics(self.path, start_step)
        self._file = files.LineLog(self.path)
        self._perf = files.LineLog(os.path.join(workdir, "perf.jsonl"))
        from train import trackers as trackers_lib
        self._trackers = trackers_lib.build(trackers, workdir)
        if "tensorboard" in trackers:
            try:
                SummaryWriter = _import_summary_writer()
                # On resume, TensorBoard hides the events written after the restored step.
                # A gs:// logdir is written by tensorboardX's own GCS writer (google-cloud-storage),
                # which uploads the whole event file on each flush (every 30 s) and on close.
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30,
                                         purge_step=start_step + 1 if start_step else None)
            except ImportError:  # TensorBoard files are a convenience, not a requirement
                self._tb = None
        if progress:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             file=sys.stderr, mininterval=1.0, smoothing=0.1)

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled or not scalars:
            return
        row = {"step": int(step), **{k: _clean(v) for k, v in sorted(scalars.items())}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))
        for tracker in self._trackers:
            tracker.log(step, scalars)
        if self._bar is not None:
            shown = {k.split("/")[-1] if k.startswith("train/") else k: f"{float(v):.4g}"
                     for k, v in row.items() if k in ("train/loss", "eval/accuracy", "eval/loss")}
            self._bar.set_postfix(shown, refresh=False)

    def perf(self, step: int, scalars: dict[str, float]) -> None:
        """Timings (steps/s, wall time): TensorBoard and DIR/perf.jsonl, never metrics.jsonl,
        which stays bit-for-bit reproducible."""
        if not self.enabled:
            return
        row = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
        self._perf.write(json.dumps(row) + "\n")
        self._perf.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))
        for tracker in self._trackers:
            tracker.log(step, scalars)
        if self._bar is not None:
            self._bar.set_postfix_str(self._bar.postfix or "", refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        self._perf.close()
        if self._tb is not None:
            self._tb.close()
        for tracker in self._trackers:
            tracker.close()
        if self._bar is not None:
            self._bar.close()


class Timer:
    """Wall and process CPU time of a span, for steps/s without host syncs on the device.
    CPU time (all threads: the XLA workers, the input pipeline, checkpoint writers) is the
    steadier measure of the work a run does on a shared or throttled machine."""

    def __init__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) since the last lap."""
        now, cpu = time.perf_counter(), time.process_time()
        out = (now - self.start, cpu - self.cpu_start)
        self.start, self.cpu_start = now, cpu
        return out
