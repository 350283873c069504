"""Multi-process start-up: `jax.distributed.initialize` from flags or the environment.

Cloud TPU pod slices and SLURM are detected by JAX itself (call with no arguments);
elsewhere pass --coordinator_address, --num_processes and --process_id.
"""
from __future__ import annotations

import os

import jax


def in_managed_cluster() -> bool:
    """True on a SLURM job with several tasks or a multi-host Cloud TPU VM."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> None:
    """Joins the job's processes; a no-op for a single process started without flags."""
    if coordinator_address or (num_processes and num_processes > 1):
        _cpu_collectives()
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   local_device_ids=local_device_ids)
    elif in_managed_cluster():
        _cpu_collectives()  # e.g. `srun -n 2 python run.py train ...` on CPU nodes
        jax.distributed.initialize()


def _cpu_collectives() -> None:
    """Lets CPU processes all-reduce over TCP; only the CPU backend reads it, and it must be
    set before `jax.distributed.initialize`."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
