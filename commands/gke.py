"""`run.py sweep --launcher gke`: one JobSet (jobset.x-k8s.io/v1alpha2) manifest per trial.

    python run.py sweep --config configs/NAME.py --workdir DIR --launcher gke \\
        --cloud_workdir gs://BUCKET/PATH --gke_image IMAGE \\
        --gke_tpu_type tpu-v5-lite-podslice --gke_tpu_topology 2x4 [--gke_chips_per_host 4]
    kubectl apply -f DIR/gke/

Each manifest runs one pod per TPU host (chips / chips per host), every pod the same
`python run.py train ...` (as an argv list, never through a shell); jax.distributed finds
the workers from the TPU environment GKE sets, and the JobSet's headless service.
"""
from __future__ import annotations

import hashlib
import math
import os
import re

import yaml

from errors import ConfigError


def check_flags(flags) -> None:
    """The GKE flags are given and the topology reads as AxB[xC]; one line otherwise."""
    for name in ("gke_image", "gke_tpu_type", "gke_tpu_topology", "cloud_workdir"):
        if not flags[name].value:
            raise ConfigError(f"--launcher gke needs --{name}.")
    if not re.fullmatch(r"\d+(x\d+){1,2}", flags.gke_tpu_topology):
        raise ConfigError(f"--gke_tpu_topology must look like 2x4 or 4x4x4, got {flags.gke_tpu_topology!r}.")
    if flags.gke_chips_per_host < 1:
        raise ConfigError(f"--gke_chips_per_host must be at least 1, got {flags.gke_chips_per_host}.")


def hosts(topology: str, chips_per_host: int) -> int:
    """Pods (TPU hosts) a slice of `topology` needs."""
    return max(1, math.prod(int(d) for d in topology.split("x")) // chips_per_host)


def job_name(trial: str) -> str:
    """A DNS-1035 name for `trial` (lowercase, <= 40 chars, unique by a hash)."""
    base = re.sub(r"[^a-z0-9-]+", "-", trial.lower()).strip("-")[:28] or "trial"
    return f"strata-{base}-{hashlib.sha1(trial.encode()).hexdigest()[:4]}".replace("--", "-")


def manifest(trial: str, args: list[str], flags) -> dict:
    """The JobSet for one trial: `hosts` pods, each running `python run.py ARGS`."""
    n = hosts(flags.gke_tpu_topology, flags.gke_chips_per_host)
    container = {
        "name": "strata", "image": flags.gke_image, "workingDir": "/strata",
        "command": ["python", "run.py", *args],
        "env": [{"name": "JAX_PLATFORMS", "value": "tpu"}],
        "ports": [{"containerPort": 8471}, {"containerPort": 8080}],
        "resources": {"limits": {"google.com/tpu": flags.gke_chips_per_host}},
    }
    pod = {"metadata": {"labels": {"strata-trial": job_name(trial)}},
           "spec": {"restartPolicy": "Never", "subdomain": job_name(trial),
                    "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": flags.gke_tpu_type,
                                     "cloud.google.com/gke-tpu-topology": flags.gke_tpu_topology},
                    "containers": [container]}}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": job_name(trial), "annotations": {
            "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool",
            "strata/trial": trial}},
        "spec": {"failurePolicy": {"maxRestarts": 3}, "replicatedJobs": [{
            "name": "workers", "replicas": 1,
            "template": {"spec": {"parallelism": n, "completions": n, "backoffLimit": 0,
                                  "completionMode": "Indexed", "template": pod}}}]},
    }


def write(workdir: str, jobs: list[tuple[str, list[str]]], flags) -> str:
    """Writes DIR/gke/<job>.yaml per `(trial name, train args)`; returns the folder."""
    folder = os.path.join(workdir, "gke")
    os.makedirs(folder, exist_ok=True)
    for trial, args in jobs:
        with open(os.path.join(folder, job_name(trial) + ".yaml"), "w") as f:
            yaml.safe_dump(manifest(trial, args, flags), f, sort_keys=False)
    return folder
