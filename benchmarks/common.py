"""Timing and reporting helpers shared by the benchmark parts.

Contenders are timed *interleaved*: repeat r runs every contender once (the order rotating
each repeat), so a load spike from other processes hits all of them alike; the medians of
the repeats and their ratio are what to read, not the absolute numbers.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import statistics
import time
from typing import Callable


@dataclasses.dataclass
class Row:
    """One line of the results table."""
    part: str
    what: str
    strata: str
    reference: str = ""
    ratio: str = ""
    note: str = ""


NO_TORCH = "torch not installed (`pip install -e '.[bench]'`): PyTorch reference skipped"


def torch_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def env(strata_defaults: bool = True, allocator: bool = True) -> dict[str, str]:
    """Environment of a worker process: with Strata's CPU defaults (what run.py applies)
    or without them (the PyTorch reference, and Strata's "no defaults" ablation)."""
    out = dict(os.environ)
    out["STRATA_CPU_DEFAULTS"] = "1" if strata_defaults else "0"
    out["STRATA_BENCH_ALLOCATOR"] = "1" if allocator else "0"
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return out


def explicit_strata_env() -> dict[str, str]:
    """Strata's CPU defaults passed through the environment instead of applied in the
    process: XLA_FLAGS with the default flags, and the allocator settings as glibc
    tunables (read at process start, the same settings `tune_host_allocator` makes with
    mallopt). For processes Strata does not start itself, e.g. `run.py` before it calls
    train/xla_defaults.py."""
    from train import xla_defaults
    out = env(strata_defaults=False)
    if xla_defaults.enabled() and xla_defaults.platform_is_cpu():
        out["XLA_FLAGS"] = " ".join(filter(None, [out.get("XLA_FLAGS", ""), *xla_defaults.cpu_flags(out)]))
        tunables = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864"
        out["GLIBC_TUNABLES"] = ":".join(filter(None, [out.get("GLIBC_TUNABLES", ""), tunables]))
    return out


def pick_torch_threads(run: Callable[[int], None], steps: int = 2) -> int:
    """Sets torch's intra-op threads to the faster of all cores and one core, timed on
    `steps` steps each after a warm-up step, and returns it. On a busy machine OpenMP's
    spin-waiting can make all-core PyTorch several times slower than one core, so the
    reference is given whichever is faster here and now."""
    import torch
    candidates = sorted({os.cpu_count() or 1, 1}, reverse=True)
    times = {}
    for n in candidates:
        torch.set_num_threads(n)
        run(1)
        t = time.perf_counter()
        run(steps)
        times[n] = time.perf_counter() - t
    best = min(times, key=times.get)
    torch.set_num_threads(best)
    return best


def step_runner(step: Callable, state, batches: list) -> Callable[[int], None]:
    """run(k): k calls of a jitted train step over `batches` in turn, blocking on the last;
    the state carries over from call to call (`run.state()` returns it)."""
    import jax
    holder = {"state": state}

    def run(k: int) -> None:
        s = holder["state"]
        for i in range(k):
            s, _ = step(s, batches[i % len(batches)])
        jax.block_until_ready(s)
        holder["state"] = s

    run.state = lambda: holder["state"]
    return run


def interleaved(contenders: dict[str, Callable[[int], None]], *, steps: int, repeats: int,
                warmup: int = 1, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds per step of each contender, one sample per repeat.

    `contenders[name](n)` runs n steps and returns once they are finished (it must block on
    the device); it may return the seconds they took (a `worker.Remote` does). When `cpu`
    is given it receives the process CPU seconds per step of in-process contenders (all
    threads): on a loaded machine, a steadier measure of the work done than wall time. Each first runs `warmup` repeats untimed; then repeat r times `steps` steps
    of every contender in turn, the order rotated by r.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name](steps)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            took = contenders[name](steps)  # a remote contender reports its own time
            if cpu is not None and not isinstance(took, float):
                cpu.setdefault(name, []).append((time.process_time() - c) / steps)
            took = took if isinstance(took, float) else time.perf_counter() - t
            samples[name].append(took / steps)
    return samples


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """'median (min-max)' in milliseconds."""
    return f"{1e3 * median(xs):.1f} ms ({1e3 * min(xs):.0f}-{1e3 * max(xs):.0f})"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _version(name: str) -> str:
    try:
        return importlib.import_module(name).__version__
    except Exception:
        return "not installed"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Where and with what the numbers were taken (imports jax: call it last)."""
    from train import xla_defaults
    strata_flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), *xla_defaults.cpu_flags()]))
    import jax
    devices = jax.devices()
    info = {
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "jax devices": f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})",
        "python": platform.python_version(),
        "XLA_FLAGS of the Strata workers": strata_flags or "(none)",
        "host allocator tuning (Strata workers)": "yes (glibc mallopt)" if (
            xla_defaults.enabled() and xla_defaults.platform_is_cpu()) else "no",
    }
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain", "numpy", "torch"):
        info[pkg] = _version(pkg)
    return info


def markdown(rows: list[Row], info: dict[str, str], loads: list[str], command: str) -> str:
    lines = ["| part | measure | Strata (JAX) | reference | ratio | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.part, r.what, r.strata, r.reference, r.ratio, r.note]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    lines.append(f"Command: `{command}`")
    lines.append("")
    lines.append(f"Load average (1/5/15 min) at the start and after each part: {'; '.join(loads)}")
    lines.append("")
    for k, v in info.items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"
