"""`train.profile_steps = (start, stop)`: a `jax.profiler` trace of steps start..stop
(1-based, inclusive) into DIR/profile, in the layout TensorBoard's profile plugin and
Perfetto/XProf read (DIR/profile/plugins/profile/<run>/<host>.xplane.pb). (0, 0) = off.
Every process traces its own devices; `run.py inspect DIR` lists the traces."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Sequence

import jax

from errors import ConfigError
from train import files

PROFILE_DIR = "profile"


def check_profile_steps(steps: Sequence[int], total_steps: int) -> tuple[int, int]:
    """(start, stop) checked: (0, 0), or 1 <= start <= stop <= total_steps."""
    if len(steps) != 2:
        raise ConfigError(f"train.profile_steps must be (start, stop), got {tuple(steps)!r}.")
    start, stop = int(steps[0]), int(steps[1])
    if (start, stop) != (0, 0) and not 1 <= start <= stop <= total_steps:
        raise ConfigError(f"train.profile_steps={start, stop} must be (0, 0) (off) or steps "
                          f"1 <= start <= stop <= train.steps={total_steps}.")
    return start, stop


class StepProfiler:
    """Starts the trace before step `start` runs and stops it once step `stop` is done
    (waiting for the device, so the trace holds the whole step)."""

    def __init__(self, steps: Sequence[int], total_steps: int, workdir: str):
        self.start, self.stop = check_profile_steps(steps, total_steps)
        self.directory = os.path.join(workdir, PROFILE_DIR)
        self.active = False
        self._local = None  # a bucket workdir's trace is written here, then uploaded

    def before(self, step: int) -> None:
        """Called before step `step` (1-based) runs."""
        if self.start and step == self.start and not self.active:
            # JAX would write gs:// through its own GCS client (its own credentials and
            # endpoint); a local trace uploaded through train/files.py uses ours.
            if files.is_remote(self.directory):
                self._local = tempfile.mkdtemp(prefix="strata-profile-")
            jax.profiler.start_trace(self._local or self.directory)
            self.active = True

    def after(self, step: int, state: Any) -> None:
        """Called after step `step` ran, with its output state."""
        if self.active and step >= self.stop:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            if self._local is not None:
                for path, _ in files.walk_sizes(self._local):
                    with open(path, "rb") as f:
                        files.write_bytes(os.path.join(self.directory, os.path.relpath(path, self._local)),
                                          f.read())
                shutil.rmtree(self._local)
                self._local = None


def list_traces(workdir: str) -> list[tuple[str, int]]:
    """(path relative to the workdir, size in bytes) of every trace file under DIR/profile."""
    root = os.path.join(workdir, PROFILE_DIR)
    rel = (lambda p: p[len(workdir):].lstrip("/")) if files.is_remote(workdir) else (
        lambda p: os.path.relpath(p, workdir))
    return sorted((rel(path), size) for path, size in files.walk_sizes(root))
