"""The verbs that act on one run: `train` into a workdir, and `eval`, `sample` of the
latest readable checkpoint there."""
from __future__ import annotations

import json
import os
import sys

import ml_collections

from errors import ConfigError
from train import checks, files

DEFAULT_WORKDIR = "runs/default"  # bare `python run.py` trains the default config here


# Overrides that `eval`, `sample`, `attack` and `explain` apply to the run's saved config (the rest of it
# describes the trained model and stays as it was).
POST_TRAINING_SECTIONS = ("sample.", "evals.", "attack.", "explain.", "data.data_dir",
                          "train.eval_batch_size", "train.eval_max_batches")


def workdir_flag(flags, default: str | None) -> str:
    workdir = flags.workdir or default
    if not workdir:
        raise ConfigError("--workdir is required for this command, e.g. --workdir runs/NAME.")
    return workdir


def saved_config(workdir: str, overrides: dict | None = None,
                 defaults: dict | None = None) -> ml_collections.ConfigDict:
    """The resolved config that `train` wrote into `workdir`, with the command line's
    `--config.KEY=VALUE` `overrides` of sampling and evaluation settings applied. Top-level
    sections of `defaults` that the saved config lacks (a run trained before they existed,
    e.g. `attack`), and their keys it lacks (`explain.method`), are taken from it."""
    if checks.check_scheme(workdir):
        from train import bucket
        bucket.check_bucket(workdir)
    path = os.path.join(workdir, "config.json")
    if not files.exists(path):
        raise ConfigError(f"{workdir} has no config.json; train there first "
                          f"(python run.py train --config ... --workdir {workdir}).")
    config = ml_collections.ConfigDict(json.loads(files.read_text(path)))
    for section in (defaults or {}):
        if section not in config:
            config[section] = ml_collections.ConfigDict(defaults[section].to_dict())
        for key, value in defaults[section].items():  # keys added to a section since
            if key not in config[section]:
                config[section][key] = value
    for key, value in (overrides or {}).items():
        if not key.startswith(POST_TRAINING_SECTIONS):
            allowed = ", ".join(s + "*" if s.endswith(".") else s for s in POST_TRAINING_SECTIONS)
            raise ConfigError(f"--config.{key} cannot change a trained run; eval, sample, attack and explain take "
                              f"overrides of {allowed} only.")
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    checks.check_config(config)
    return config


def overrides(flags) -> dict:
    """The `--config.KEY=VALUE` pairs given on the command line."""
    return dict(flags["config"].override_values)


def cmd_train(args: list[str], flags) -> int:
    """Trains (or resumes) the config into --workdir (default runs/default)."""
    from train import loop
    config = flags.config
    if args:
        raise ConfigError(f"unexpected argument(s) {' '.join(args)!r}; config values are "
                          "set with --config.KEY=VALUE.")
    bare = flags.workdir is None
    workdir = flags.workdir or DEFAULT_WORKDIR
    checks.check_scheme(workdir)  # an unknown scheme: before anything is built or written
    # Order: the config's own values, then names and devices, then the workdir; so each
    # mistake is reported as itself, and nothing in the workdir is touched before all pass.
    checks.check_config(config)
    checks.resolve(config)
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


def experiment_and_state(workdir: str, overrides: dict,
                         defaults: dict | None = None):
    """The run's Experiment (read-only: a run may be training there), the newest checkpoint
    that can be read and its step; unreadable ones are skipped with a warning, not moved."""
    from train.loop import Experiment
    config = saved_config(workdir, overrides, defaults)
    exp = Experiment(config, workdir, read_only=True)
    steps = exp.checkpointer.all_steps()
    if not steps:
        exp.checkpointer.close()
        raise ConfigError(f"{workdir} has no checkpoint yet; train there first.")
    for step in reversed(steps):
        try:
            return exp, exp.restore(step)[0], step
        except Exception as e:  # a damaged checkpoint: the previous one will do
            print(f"strata: warning: checkpoint {step} is unreadable ({type(e).__name__}: "
                  f"{(str(e).strip().splitlines() or [''])[0][:160]}); trying the previous one.",
                  file=sys.stderr, flush=True)
    exp.checkpointer.close()
    raise ConfigError(f"no checkpoint in {exp.checkpointer.directory} could be read.")


def cmd_eval(args: list[str], flags) -> int:
    """Every evaluator of the run on its newest readable checkpoint; prints one JSON line."""
    workdir = workdir_flag(flags, args[0] if args else None)
    exp, state, step = experiment_and_state(workdir, overrides(flags))
    try:
        metrics = exp.evaluate(state)
    finally:
        exp.checkpointer.close()
    print(json.dumps({"step": step, **metrics}))
    return 0


def cmd_sample(args: list[str], flags) -> int:
    """Samples as `config.sample` says (text for language models, a PNG grid for
    diffusion); `--config.sample.seed` makes it reproducible. Sampled images are judged by
    the run's sample-quality evaluator, when it has one."""
    import jax
    workdir = workdir_flag(flags, args[0] if args else None)
    exp, state, step = experiment_and_state(workdir, overrides(flags))
    try:
        settings = exp.config.sample
        exp.task.check_sampling(settings)
        ctx = exp.context(state, jax.random.PRNGKey(settings.seed))
        result = exp.task.sample(ctx, settings)
        lines = [result.text]
        if result.images is not None and result.labels is not None:
            for evaluator in exp.evaluators:
                if hasattr(evaluator, "describe_samples"):
                    lines.append(evaluator.describe_samples(exp.eval_context(state), result.images,
                                                            result.labels))
    finally:
        exp.checkpointer.close()
    print("\n".join(lines))
    return 0
