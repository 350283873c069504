"""`run.py sweep --launcher tpu-vm`: one exact Cloud TPU VM command per trial.

    python run.py sweep --config configs/NAME.py --workdir DIR --launcher tpu-vm \\
        --cloud_workdir gs://BUCKET/PATH --tpu_name NAME --tpu_zone ZONE [--tpu_project P]

Writes DIR/tpu_commands.sh: for each trial, `gcloud compute tpus tpu-vm ssh NAME --zone ZONE
--worker=all --command '...'`, the same `python run.py train ...` on every worker (jax.distributed
finds the pod's workers itself), the trial's workdir under the gs:// bucket. Every value is
shell-quoted twice: once for the local shell, once for the shell on each worker.
"""
from __future__ import annotations

import os
import shlex

from errors import ConfigError


def check_flags(flags) -> None:
    """--tpu_name, --tpu_zone and a gs:// --cloud_workdir are given; one line otherwise."""
    for name in ("tpu_name", "tpu_zone", "cloud_workdir"):
        if not flags[name].value:
            raise ConfigError(f"--launcher tpu-vm needs --{name}.")


def worker_command(args: list[str]) -> str:
    """The shell line each worker runs: `cd` into the repository, then `python run.py ARGS`."""
    return "cd ~/strata && " + shlex.join(["python", "run.py", *args])


def ssh_command(args: list[str], name: str, zone: str, project: str | None) -> str:
    """The local shell line that runs `args` on every worker of TPU VM `name`."""
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, "--zone", zone]
    if project:
        cmd += ["--project", project]
    return shlex.join([*cmd, "--worker=all", "--command", worker_command(args)])


def write(workdir: str, jobs: list[tuple[str, list[str]]], flags) -> str:
    """Writes DIR/tpu_commands.sh for `(trial name, train args)` jobs; returns its path."""
    lines = ["#!/bin/bash", "# strata sweep --launcher tpu-vm: one trial per command, run in order.",
             "set -euo pipefail"]
    for name, args in jobs:
        lines += [f"# {name}", ssh_command(args, flags.tpu_name, flags.tpu_zone, flags.tpu_project)]
    path = os.path.join(workdir, "tpu_commands.sh")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)
    return path
