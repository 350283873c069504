"""The tooling around the loop: one module per `run.py` verb (or family of verbs), found
by name through one table. `run.py` parses flags and calls `dispatch`; the loop itself
lives in `train/` and knows nothing of these."""
from __future__ import annotations

import importlib

from errors import lookup

# verb -> "module:function(args, flags) -> exit code"; modules load only when used, so
# `report` never imports JAX's training stack and `train` never imports matplotlib.
COMMANDS: dict[str, str] = {
    "train": "commands.workdir:cmd_train",
    "eval": "commands.workdir:cmd_eval",
    "sample": "commands.workdir:cmd_sample",
    "sweep": "commands.sweep:cmd_sweep",
    "report": "commands.report:cmd_report",
    "prepare": "commands.prepare:cmd_prepare",
    "inspect": "commands.inspect_run:cmd_inspect",
    "export": "commands.export:cmd_export",
    "attack": "commands.attack:cmd_attack",
    "explain": "commands.explain:cmd_explain",
}
# Verbs that use devices: jax.distributed starts before anything touches one.
DISTRIBUTED = ("train", "eval", "sample", "attack", "explain")


def dispatch(command: str, args: list[str], flags) -> int:
    """Runs verb `command` with its positional `args` and the parsed absl `flags`."""
    module_name, function = lookup(COMMANDS, "command", command).split(":")
    if command in DISTRIBUTED:
        from train import distributed
        distributed.initialize(flags.coordinator_address, flags.num_processes, flags.process_id)
    return getattr(importlib.import_module(module_name), function)(args, flags)
