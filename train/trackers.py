"""Experiment trackers beyond metrics.jsonl, chosen by `train.trackers` (names in TRACKERS).

`tensorboard` (the default) is written by `train.writers.MetricWriter` itself; `wandb`
logs the same scalars (metrics and perf/ timings) to Weights & Biases, with the run's
config.json and manifest.json as the W&B config. Only process 0 logs. The W&B run id is
kept in DIR/wandb_id, so a resumed run continues the same W&B run; `WANDB_MODE=offline`
writes it under DIR/wandb for a later `wandb sync`. wandb is optional: asking for it
without it installed is a ConfigError, raised before any compute.
"""
from __future__ import annotations

import importlib
import json
import os
import secrets
from typing import Any, Sequence

from errors import ConfigError, unknown_name_message
from train import files

# name -> what it needs installed (None: always available)
TRACKERS: dict[str, str | None] = {"tensorboard": None, "wandb": "wandb"}
ID_FILE = "wandb_id"


def check_trackers(names: Sequence[str]) -> None:
    """Unknown names and trackers whose package is missing are ConfigErrors (one line)."""
    if isinstance(names, str):
        raise ConfigError(f"train.trackers must be a list or tuple of names, got the string {names!r}; "
                          f"write e.g. --config.train.trackers='(\"tensorboard\", \"wandb\")'.")
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(unknown_name_message("tracker", name, list(TRACKERS)))
        package = TRACKERS[name]
        if package and not _importable(package):
            raise ConfigError(f"train.trackers asks for {name!r} but the {package} package is not "
                              f"installed; pip install {package}, or drop it from train.trackers.")


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def _read_json(path: str) -> dict:
    try:
        return json.loads(files.read_text(path))
    except (OSError, ValueError):
        return {}


class WandbTracker:
    """One W&B run per workdir: created on the first start, resumed (same id) afterwards."""

    def __init__(self, workdir: str):
        import wandb
        id_path = os.path.join(workdir, ID_FILE)
        if files.exists(id_path):
            run_id = files.read_text(id_path).strip()
        else:
            run_id = secrets.token_hex(4)  # 8 lowercase hex characters: a valid W&B id
            files.write_text(id_path, run_id + "\n")
        config = _read_json(os.path.join(workdir, "config.json"))
        config["manifest"] = _read_json(os.path.join(workdir, "manifest.json"))
        # W&B keeps its files in a local folder: the workdir, or its default one for a bucket.
        self.run = wandb.init(id=run_id, resume="allow", dir=None if files.is_remote(workdir) else workdir,
                              config=config,
                              project=os.environ.get("WANDB_PROJECT", "strata"),
                              name=os.path.basename(files.absolute(workdir).rstrip("/")))

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        self.run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

    def close(self) -> None:
        self.run.finish()


def build(names: Sequence[str], workdir: str) -> list[Any]:
    """The trackers other than TensorBoard (which MetricWriter writes itself)."""
    check_trackers(names)
    return [WandbTracker(workdir) for name in names if name == "wandb"]
