"""DIR/config.json and DIR/manifest.json: what ran, from which code, on what, written
before the first step so that every result can be traced and reproduced."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

import jax
import ml_collections

from train.paths import REPO

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
            "array-record", "ml-collections", "numpy", "tensorflow-cpu")


def git_state(repo: str = REPO) -> dict[str, Any]:
    """Commit hash and whether tracked files differ from it (None outside a git checkout)."""
    def run(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = run("rev-parse", "HEAD") or None
        dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_manifest(config: ml_collections.ConfigDict, mesh) -> dict[str, Any]:
    devices = jax.devices()
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "backend": jax.default_backend(),
        "devices": {"count": len(devices), "kind": devices[0].device_kind,
                    "processes": jax.process_count()},
        "mesh": dict(mesh.shape),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "seed": config.seed,
        "command": sys.argv,
    }


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))
