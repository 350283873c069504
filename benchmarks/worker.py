"""A contender in its own process, so that it runs under its own environment (XLA flags,
Strata's CPU defaults or none, PyTorch's threads) while still being timed interleaved
with the others by the coordinator (`benchmarks.run`).

    python -m benchmarks.worker MODULE:FACTORY '{"json": "kwargs"}'

FACTORY(**kwargs) returns run(n), a function that runs n steps and blocks until they are
done; `run.extras` may map names to functions returning JSON-able values. The worker
applies `train.xla_defaults` first, as run.py does (STRATA_CPU_DEFAULTS=0 turns that off;
STRATA_BENCH_ALLOCATOR=0 leaves out only the allocator tuning). Then it reads commands on
stdin, one per line:

    N                       -> "wall_seconds cpu_seconds" for N steps
    {"call": NAME, ...}     -> one line of JSON: run.extras[NAME](**rest)
    (empty line or EOF)     -> exit
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Remote:
    """A worker process seen as a contender: `Remote(...)(n)` -> wall seconds for n steps."""

    def __init__(self, target: str, kwargs: dict | None = None, env: dict | None = None):
        self.target = target
        self.cpu_seconds: list[float] = []  # CPU time (all threads) per step, per call
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", target, json.dumps(kwargs or {})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env=env if env is not None else dict(os.environ), cwd=REPO)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            self.close()
            raise RuntimeError(f"benchmark worker {target} failed to start (see its stderr above)")

    def __call__(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        wall, cpu = map(float, self._answer().split())
        self.cpu_seconds.append(cpu / n)
        return wall

    def call(self, name: str, **kwargs):
        self.proc.stdin.write(json.dumps({"call": name, **kwargs}) + "\n")
        return json.loads(self._answer())

    def _answer(self) -> str:
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"benchmark worker {self.target} died (see its stderr above)")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def apply_strata_defaults() -> None:
    """What run.py does before importing JAX (see train/xla_defaults.py)."""
    from train import xla_defaults
    xla_defaults.apply_cpu_defaults()
    if os.environ.get("STRATA_BENCH_ALLOCATOR", "1") != "0":
        xla_defaults.tune_host_allocator()


def main() -> None:
    target, kwargs = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    sys.path.insert(0, REPO)
    apply_strata_defaults()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the contender prints stays off the protocol
    module, name = target.split(":")
    run = getattr(importlib.import_module(module), name)(**kwargs)
    extras = getattr(run, "extras", {})
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            break
        if line.startswith("{"):
            request = json.loads(line)
            out.write(json.dumps(extras[request.pop("call")](**request)) + "\n")
        else:
            t, cpu = time.perf_counter(), time.process_time()
            run(int(line))
            out.write(f"{time.perf_counter() - t} {time.process_time() - cpu}\n")
        out.flush()


if __name__ == "__main__":
    main()
