"""A sweep's trials: declared by a config file's `get_sweep(arg)`, named by the overrides
that vary across the sweep plus the seed, and turned into ordinary `run.py train` commands.
`commands/sweep.py` runs them; `commands/report.py` names its rows the same way."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shlex

import ml_collections

from errors import ConfigError
from train import checks, paths

RUN_PY = os.path.join(paths.REPO, "run.py")
MAX_NAME = 150       # longer names are cut and end in a hash of the overrides


@dataclasses.dataclass(frozen=True)
class Trial:
    name: str        # its directory under the sweep's workdir
    group: str       # the name without the seed: a group's trials differ only in seed
    overrides: dict  # config key -> value, the seed not included
    seed: int


CONFIG_ARG = "config"  # a trial key that is no config key: the config file's argument for that
                      # trial, e.g. {"config": "family=vit"} (trials of different models)


def _module(path: str):
    spec = importlib.util.spec_from_file_location("_strata_sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(config_file: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of `config_file` ("path.py[:arg]"), as `run.py train` loads it."""
    path, colon, arg = config_file.partition(":")
    module = _module(path)
    try:
        return module.get_config(arg) if colon else module.get_config()
    except ValueError as e:  # parse_arg: an unknown argument
        raise ConfigError(f"{config_file}: {e}") from None


def trial_file(config_file: str, overrides: dict) -> tuple[str, dict]:
    """(the config file with the trial's own argument, if it has one; its config overrides)."""
    if CONFIG_ARG not in overrides:
        return config_file, overrides
    rest = {k: v for k, v in overrides.items() if k != CONFIG_ARG}
    return f"{config_file.partition(':')[0]}:{overrides[CONFIG_ARG]}", rest


def load_sweep(config_file: str) -> list[dict]:
    """The override dicts of `get_sweep(arg)` in `config_file` ("path.py[:arg]")."""
    path, colon, arg = config_file.partition(":")
    module = _module(path)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(
            f"{path} has no get_sweep(arg); add one that returns the trials as a list of "
            "override dicts (see configs/digits_resnet.py).")
    trials = module.get_sweep(arg) if colon else module.get_sweep()
    if not isinstance(trials, (list, tuple)) or not trials or not all(isinstance(t, dict) for t in trials):
        raise ConfigError(f"get_sweep in {path} must return a non-empty list of dicts "
                                 f"{{'config.key': value}}, got {type(trials).__name__}.")
    seen = {}
    for i, t in enumerate(trials):
        key = _canonical(t)
        if key in seen:
            raise ConfigError(f"get_sweep in {path}: trials {seen[key]} and {i} are the same: {t}.")
        seen[key] = i
        if not isinstance(t.get(CONFIG_ARG, ""), str):
            raise ConfigError(f"get_sweep in {path}: trial {i}'s {CONFIG_ARG!r} (the config "
                              f"file's argument) must be a string, got {t[CONFIG_ARG]!r}.")
    return [dict(t) for t in trials]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def name_value(value) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest exact form: 0.1, 3e-05
    if isinstance(value, (list, tuple)):
        return "-".join(name_value(v) for v in value)
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """`optimizer.learning_rate` -> `learning_rate`, unless two keys end the same."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def varying_keys(trials: list[dict]) -> list[str]:
    """Keys whose value differs between trials, in order of first appearance."""
    keys = list(dict.fromkeys(k for t in trials for k in t))
    return [k for k in keys if len({_canonical(t[k]) if k in t else "unset" for t in trials}) > 1]


def group_names(trials: list[dict]) -> list[str]:
    """A readable, filesystem-safe name per trial from the overrides that vary across the
    sweep; the same trials always get the same names. Distinct trials whose names collide
    once sanitized (or that are too long) get a hash of their overrides appended."""
    keys = varying_keys(trials)
    short = short_keys(keys)
    names = []
    for t in trials:
        name = ",".join(f"{short[k]}={name_value(t[k])}" for k in keys if k in t)
        names.append(re.sub(r"[^A-Za-z0-9._+=,-]", "_", name))
    canon = [_canonical(t) for t in trials]
    out = []
    for name, c in zip(names, canon):
        clash = any(n == name and other != c for n, other in zip(names, canon))
        if clash or len(name) > MAX_NAME:
            name = f"{name[:MAX_NAME]},id={hashlib.sha1(c.encode()).hexdigest()[:8]}".lstrip(",")
        out.append(name)
    return out


def expand(trials: list[dict], base_seed: int, seeds: int) -> list[Trial]:
    """`seeds` trials per override dict: seeds base..base+K-1, the base being the trial's
    own `seed` override or the config's."""
    plain = [{k: v for k, v in t.items() if k != "seed"} for t in trials]
    out, names = [], set()
    for t, overrides, group in zip(trials, plain, group_names(plain)):
        first = int(t.get("seed", base_seed))
        for seed in range(first, first + seeds):
            name = f"{group},seed={seed}" if group else f"seed={seed}"
            if name in names:
                raise ConfigError(f"two trials of the sweep are both {name}; with a 'seed' "
                                         "in the trials, --seeds K adds seeds after each one.")
            names.add(name)
            out.append(Trial(name, group or "trial", overrides, seed))
    return out


def trial_config(base: ml_collections.ConfigDict, overrides: dict, seed: int) -> ml_collections.ConfigDict:
    """The base config with the trial's overrides, checked as `train` would check it."""
    config = copy.deepcopy(base)
    known = sorted(checks.flatten(config.to_dict()))
    for key, value in {**overrides, "seed": seed}.items():
        node, parts = config, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"sweep override {key!r}: no such config key.{hint}")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            why = " ".join(str(e).split())
            raise ConfigError(f"sweep override {key}={value!r}: {why}") from None
    checks.check_config(config)
    checks.resolve(config)
    return config


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def train_args(config_file: str, workdir: str, overrides: dict) -> list[str]:
    """The arguments after `run.py` of the ordinary train command for one trial."""
    return ["train", "--config", config_file, "--workdir", workdir,
            *(f"--config.{k}={_flag_value(v)}" for k, v in overrides.items())]


def printable(args: list[str]) -> str:
    """`python run.py ARGS`, shell-quoted, run.py relative to the current directory."""
    run_py = os.path.relpath(RUN_PY)
    return shlex.join(["python", RUN_PY if run_py.startswith("..") else run_py, *args])
