"""The commands behind run.py: train, eval, sample, prepare, inspect (+ sweep, report)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import ml_collections

from train import checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _workdir(flags, default: str | None) -> str:
    workdir = flags.workdir or default
    if not workdir:
        raise checks.ConfigError("--workdir is required for this command, e.g. --workdir runs/NAME.")
    return workdir


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config that `train` wrote into `workdir`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise checks.ConfigError(f"{workdir} has no config.json; train there first "
                                 f"(python run.py train --config ... --workdir {workdir}).")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def cmd_train(args: list[str], flags, default_workdir: str) -> int:
    from train import loop
    config = flags.config
    if args:
        raise checks.ConfigError(f"unexpected argument(s) {' '.join(args)!r}; config values are "
                                 "set with --config.KEY=VALUE.")
    bare = flags.workdir is None
    workdir = flags.workdir or default_workdir
    # Order: the config's own values, then names and devices, then the workdir; so each
    # mistake is reported as itself, and nothing in the workdir is touched before all pass.
    checks.check_config(config)
    checks.check_buildable(config)
    checks.check_workdir(workdir)
    checks.check_resume_config(workdir, config, allow_change=flags.allow_config_change)
    if bare:
        print(f"strata: training {flags['config'].config_filename} into {workdir}", file=sys.stderr)
    try:
        loop.train(config, workdir)
    except loop.Preempted as p:
        return p.code
    return 0


def _experiment_and_state(workdir: str):
    """The run's Experiment (read-only: a run may be training there) and the newest
    checkpoint that can be read; unreadable ones are skipped with a warning, not moved."""
    from train.loop import Experiment
    config = saved_config(workdir)
    exp = Experiment(config, workdir, read_only=True)
    steps = exp.checkpointer.all_steps()
    if not steps:
        exp.checkpointer.close()
        raise checks.ConfigError(f"{workdir} has no checkpoint yet; train there first.")
    for step in reversed(steps):
        try:
            return exp, exp.restore(step)[0], step
        except Exception as e:  # a damaged checkpoint: the previous one will do
            print(f"strata: warning: checkpoint {step} is unreadable ({type(e).__name__}: "
                  f"{(str(e).strip().splitlines() or [''])[0][:160]}); trying the previous one.",
                  file=sys.stderr, flush=True)
    exp.checkpointer.close()
    raise checks.ConfigError(f"no checkpoint in {exp.checkpointer.directory} could be read.")


def cmd_eval(args: list[str], flags) -> int:
    workdir = _workdir(flags, args[0] if args else None)
    exp, state, step = _experiment_and_state(workdir)
    metrics = exp.evaluate(state)
    exp.checkpointer.close()
    print(json.dumps({"step": step, **metrics}))
    return 0


def cmd_sample(args: list[str], flags) -> int:
    workdir = _workdir(flags, args[0] if args else None)
    exp, state, step = _experiment_and_state(workdir)
    options = {"prompt": flags.prompt, "num_tokens": flags.num_tokens,
               "temperature": flags.temperature, "top_k": flags.top_k,
               "guidance": flags.guidance, "sampler": flags.sampler,
               "num_samples": flags.num_samples}
    result = exp.task.sample(exp.context(state), **options)
    exp.checkpointer.close()
    print(result)
    return 0


def cmd_prepare(args: list[str], flags) -> int:
    from data import sources
    if len(args) != 1:
        raise checks.ConfigError("usage: python run.py prepare NAME [--data_dir DIR]")
    builder = sources.prepare(args[0], flags.data_dir)
    print(f"strata: {args[0]} ready in {builder.data_dir} "
          f"({', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())})")
    return 0


def cmd_inspect(args: list[str], flags) -> int:
    from train import inspect_run
    path = args[0] if args else flags.workdir
    if not path:
        raise checks.ConfigError("usage: python run.py inspect WORKDIR")
    print(inspect_run.describe(path))
    return 0


def dispatch(command: str, args: list[str], flags, *, default_config: str, default_workdir: str) -> int:
    if command in ("train", "eval", "sample"):
        from train import distributed  # before anything touches a device
        distributed.initialize(flags.coordinator_address, flags.num_processes, flags.process_id)
    if command == "train":
        return cmd_train(args, flags, default_workdir)
    handlers: dict[str, Any] = {"eval": cmd_eval, "sample": cmd_sample, "prepare": cmd_prepare,
                                "inspect": cmd_inspect}
    if command in ("sweep", "report"):
        from train import sweeps
        handlers.update(sweep=sweeps.cmd_sweep, report=sweeps.cmd_report)
    return handlers[command](args, flags)
