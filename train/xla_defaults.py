"""CPU-only process defaults, applied before JAX starts (JAX reads XLA_FLAGS once, when
its backend starts, so this module imports nothing heavy and must run first):

    from train import xla_defaults
    xla_defaults.apply_cpu_defaults()    # XLA_FLAGS: flags the user has not set
    xla_defaults.tune_host_allocator()   # glibc: keep freed memory for the next step
    import jax                           # only now

Both do nothing on an accelerator (JAX_PLATFORMS names one, or a CUDA/ROCm/TPU plugin is
installed and JAX_PLATFORMS does not say "cpu"), nothing when STRATA_CPU_DEFAULTS=0, and
never override a flag the user set. Measured with `python -m benchmarks.run`
(benchmarks/results.md) on a 2-core x86 CPU with jaxlib 0.10.2:

- `tune_host_allocator`: XLA:CPU allocates each step's temporary buffers afresh (53 MB
  for the benchmark GPT, 513 MB for ResNet-18 at batch 64). glibc serves such blocks
  with mmap and unmaps them when freed, so every step page-faulted ~13,000 pages back
  in (28% of the GPT step's CPU time in the kernel). Keeping freed memory in the heap
  removed the faults: -25% CPU time per GPT step. Blocks above 64 MB allocated on XLA's
  worker threads are still mmapped (glibc's per-thread arenas are capped at 64 MB).
  One arena for all threads (GLIBC_TUNABLES=glibc.malloc.arena_max=1) ends that, but
  it is not a default because it splits the configs (train steps/s, 2 cores): digits_vit
  17 -> 23 and text_gpt 4.1 -> 5.7, while digits_resnet 37 -> 32, digits_ddpm 32 -> 18
  and the benchmark GPT step 21 -> 27 ms (lock contention on the one arena).
- `CPU_FLAGS`: see the comment on each entry. Flags are versioned: XLA renames and
  removes CPU flags, and an unknown flag stops JAX at start-up, so a flag is only added
  for the jaxlib versions it was measured on. Tried and not adopted (no gain or a loss
  on these models): --xla_cpu_use_onednn, --xla_cpu_use_xnnpack, oneDNN custom calls,
  YNNPACK off or with element-wise fusions (+eltwise: ResNet -7%, GPT +30%), 512-bit
  vectors, XNN graph fusion, legacy fusion emitters, the non-concurrency scheduler.
"""
from __future__ import annotations

import importlib.util
import os
import sys

# (flag, value, jaxlib versions "major.minor" it exists in and was measured on).
CPU_FLAGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # Convolutions on Eigen instead of YNNPACK (jaxlib 0.10's default CPU library for
    # dots and convolutions): on AVX-512, YNNPACK's convolution weight gradients ran at
    # ~65 GFLOP/s per core against Eigen's ~90, the other convolutions on par. Train
    # steps, 2 cores: digits_ddpm U-Net 66 -> 48 ms, digits_resnet 49 -> 47 ms,
    # ResNet-18 (CIFAR) ~5% less; models without convolutions are unaffected. Dots,
    # reductions and everything else stay on YNNPACK.
    ("--xla_cpu_experimental_ynn_fusion_type", "-individual_convolution", ("0.10",)),
)

_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def enabled(environ=os.environ) -> bool:
    return environ.get("STRATA_CPU_DEFAULTS", "1").strip().lower() not in ("0", "false", "no", "off")


def platform_is_cpu(environ=os.environ) -> bool:
    """Whether JAX will run on the CPU, decided without importing JAX: JAX_PLATFORMS
    (or the older JAX_PLATFORM_NAME) when set, else whether an accelerator plugin is
    installed."""
    platforms = (environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def _jaxlib_version() -> str | None:
    """'major.minor' of the installed jaxlib, read from its metadata (no import)."""
    try:
        from importlib.metadata import version
        return ".".join(version("jaxlib").split(".")[:2])
    except Exception:
        return None


def cpu_flags(environ=os.environ) -> list[str]:
    """The default flags that would be added to XLA_FLAGS: those known for the installed
    jaxlib whose name the user's XLA_FLAGS does not already mention."""
    version = _jaxlib_version()
    present = {item.split("=", 1)[0] for item in environ.get("XLA_FLAGS", "").split()}
    return [f"{name}={value}" for name, value, versions in CPU_FLAGS
            if version in versions and name not in present]


def apply_cpu_defaults(environ=os.environ) -> list[str]:
    """Appends Strata's CPU defaults to environ["XLA_FLAGS"] and returns what it added.

    Touches nothing when the platform is not the CPU, when STRATA_CPU_DEFAULTS=0, or for
    a flag the user already set. Must run before JAX starts its backend; afterwards it
    changes nothing and says so on stderr.
    """
    if not enabled(environ) or not platform_is_cpu(environ):
        return []
    added = cpu_flags(environ)
    if not added:
        return []
    if "jax" in sys.modules and _backend_started():
        print("strata: warning: apply_cpu_defaults() ran after JAX started; the XLA flags "
              f"{' '.join(added)} take effect only in new processes.", file=sys.stderr)
    environ["XLA_FLAGS"] = " ".join(filter(None, [environ.get("XLA_FLAGS", "").strip(), *added]))
    return added


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except Exception:
        return False


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_host_allocator(environ=os.environ) -> bool:
    """Keeps freed host memory in the process instead of returning it to the OS (glibc
    mallopt: no mmap for large blocks, trim only above 1 GB of free heap, grow the heap
    in 64 MB steps), so XLA:CPU's per-step buffers are reused rather than page-faulted
    in again every step. Returns whether it was applied.

    Process-wide and irreversible; CPU platform on Linux/glibc only; STRATA_CPU_DEFAULTS=0
    turns it off. The cost is a resident size that stays at its peak.
    """
    if not enabled(environ) or not platform_is_cpu(environ) or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has no tunable mallopt)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)))
