"""`run.py sweep`: a config file's trials, each one an ordinary `run.py train` command.

    python run.py sweep --config configs/NAME.py[:ARG] --workdir DIR [--parallel N] [--seeds K]
    python run.py sweep ... --print_commands    # one train command per trial, for a cluster
    python run.py report DIR                    # DIR/report.md, report.csv, plots/ (report.py)

The trials come from the config file's `get_sweep(arg)`: a list of override dicts (built
with `product`, `zip_axes`, `random_search` from configs/common.py). A trial runs in
DIR/<name>, named by the overrides that vary across the sweep plus its seed, e.g.
`learning_rate=0.1,depth=20,seed=0`. A trial whose workdir holds its final checkpoint is
skipped; any other is (re)started with its train command, which resumes from its own last
checkpoint. A failed trial is reported and the others go on. DIR/sweep.json lists the
trials for `report`.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import datetime
import difflib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque

import ml_collections

from errors import EXIT_PREEMPTED
from train import checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(REPO, "run.py")
EXIT_FAILED = 1
MAX_NAME = 150       # longer names are cut and end in a hash of the overrides


@dataclasses.dataclass(frozen=True)
class Trial:
    name: str        # its directory under the sweep's workdir
    group: str       # the name without the seed: a group's trials differ only in seed
    overrides: dict  # config key -> value, the seed not included
    seed: int


# --- Declaring trials -------------------------------------------------------------------

def load_sweep(config_file: str) -> list[dict]:
    """The override dicts of `get_sweep(arg)` in `config_file` ("path.py[:arg]")."""
    path, colon, arg = config_file.partition(":")
    spec = importlib.util.spec_from_file_location("_strata_sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise checks.ConfigError(
            f"{path} has no get_sweep(arg); add one that returns the trials as a list of "
            "override dicts (see configs/digits_resnet.py).")
    trials = module.get_sweep(arg) if colon else module.get_sweep()
    if not isinstance(trials, (list, tuple)) or not trials or not all(isinstance(t, dict) for t in trials):
        raise checks.ConfigError(f"get_sweep in {path} must return a non-empty list of dicts "
                                 f"{{'config.key': value}}, got {type(trials).__name__}.")
    seen = {}
    for i, t in enumerate(trials):
        key = _canonical(t)
        if key in seen:
            raise checks.ConfigError(f"get_sweep in {path}: trials {seen[key]} and {i} are the same: {t}.")
        seen[key] = i
    return [dict(t) for t in trials]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _name_value(value) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest exact form: 0.1, 3e-05
    if isinstance(value, (list, tuple)):
        return "-".join(_name_value(v) for v in value)
    return str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
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
    short = _short_keys(keys)
    names = []
    for t in trials:
        name = ",".join(f"{short[k]}={_name_value(t[k])}" for k in keys if k in t)
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
                raise checks.ConfigError(f"two trials of the sweep are both {name}; with a 'seed' "
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
                raise checks.ConfigError(f"sweep override {key!r}: no such config key.{hint}")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            why = " ".join(str(e).split())
            raise checks.ConfigError(f"sweep override {key}={value!r}: {why}") from None
    checks.check_config(config)
    return config


# --- Commands ---------------------------------------------------------------------------

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


def is_finished(workdir: str, expected: ml_collections.ConfigDict) -> bool:
    """True when `workdir` ran this config and holds the checkpoint of its last step."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        saved = json.load(f)
    if checks.config_differences(saved, json.loads(expected.to_json_best_effort())):
        return False  # not ours: running it makes `train` refuse with the differences
    return os.path.isdir(os.path.join(workdir, "checkpoints", str(saved["train"]["steps"])))


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=repr)
        f.write("\n")
    os.replace(tmp, path)


# --- Running ----------------------------------------------------------------------------

_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    """Linux: a trial gets SIGTERM (so it saves a checkpoint and stops) if the sweep dies,
    even by SIGKILL, instead of training on as an orphan."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _flock(path: str, wait: bool, say=None) -> int:
    """An exclusive flock on `path` (the OS drops it when its holder dies, even by SIGKILL).
    Returns the fd that holds it; if another process holds it: waits (`wait`) or raises."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        if not wait:
            os.close(fd)
            raise checks.ConfigError(f"another sweep (pid {holder}) is running in "
                                     f"{os.path.dirname(path)}; wait for it.") from None
        say(f"waiting for pid {holder}, still running in {os.path.dirname(path)}")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _log_tail(path: str) -> str:
    """The error line of a failed trial's log (else its last line)."""
    with open(path, errors="replace") as f:
        text = f.read()[-20000:]
    lines = [l.strip() for l in re.split(r"[\r\n]", text) if l.strip()]
    errors = [l for l in lines if l.startswith("strata: error:") or re.match(r"\w+(Error|Exception)\b", l)]
    return (errors or lines or ["(empty log)"])[-1][:300]


def _prepare_data(configs: list[ml_collections.ConfigDict]) -> None:
    """Embedded datasets are prepared once here, not by N trials racing to do it."""
    from data import sources
    done = set()
    for c in configs:
        key = (c.data.name, c.data.get("data_dir", ""), c.data.get("files", ""))
        if key in done or c.data.name.split(":")[0] not in sources.EMBEDDED:
            continue
        done.add(key)
        kwargs = {"files": tuple(f for f in key[2].split(",") if f)} if key[2] else {}
        sources.prepare(c.data.name, key[1] or None, **kwargs)


def run_trials(jobs: list[tuple[Trial, str, list[str], ml_collections.ConfigDict]], parallel: int,
               say) -> tuple[dict[str, str], bool]:
    """Runs `(trial, workdir, args, config)` jobs, `parallel` at a time, each as a `run.py`
    subprocess logging to WORKDIR/train.log. Returns ({name: outcome}, interrupted)."""
    queue, running, outcome = deque(jobs), {}, {}
    try:
        while queue or running:
            while queue and len(running) < parallel:
                trial, workdir, args, config = queue.popleft()
                os.makedirs(workdir, exist_ok=True)
                # A trial of a killed sweep may still be saving its checkpoint: wait for it.
                os.close(_flock(os.path.join(workdir, ".lock"), wait=True, say=say))
                if is_finished(workdir, config):
                    outcome[trial.name] = "skipped"
                    continue
                log = open(os.path.join(workdir, "train.log"), "a")
                stamp = datetime.datetime.now().isoformat(timespec="seconds")
                log.write(f"\n# {stamp} strata sweep: {printable(args)}\n")
                log.flush()
                proc = subprocess.Popen([sys.executable, RUN_PY, *args], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
                running[proc] = (trial, workdir, log, time.time())
                say(f"[{len(jobs) - len(queue)}/{len(jobs)}] started {trial.name}")
            for proc in [p for p in running if p.poll() is not None]:
                trial, workdir, log, start = running.pop(proc)
                log.close()
                took = f"{time.time() - start:.0f}s"
                if proc.returncode == 0:
                    outcome[trial.name] = "done"
                    say(f"done {trial.name} ({took})")
                else:
                    why = _log_tail(log.name)
                    outcome[trial.name] = f"failed (exit {proc.returncode}): {why}"
                    say(f"FAILED {trial.name} (exit {proc.returncode}, {took}): {why} [log: {log.name}]")
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trials save a checkpoint and stop
        say(f"interrupted: {len(running)} running trial(s) save a checkpoint and stop "
            "(Ctrl-C again to kill them). Rerun the same command to resume.")
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        try:
            for proc in running:
                proc.wait()
        except KeyboardInterrupt:
            for proc in running:
                proc.kill()
        outcome.update((trial.name, "interrupted") for trial, *_ in running.values())
        return outcome, True
    return outcome, False


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_sweep(args: list[str], flags) -> int:
    if args:
        raise checks.ConfigError(f"unexpected argument(s) {' '.join(args)!r}; usage: python run.py sweep "
                                 "--config configs/NAME.py[:ARG] --workdir DIR [--parallel N] [--seeds K]")
    if not flags.workdir:
        raise checks.ConfigError("sweep needs --workdir DIR; each trial runs in DIR/<trial name>.")
    if flags.parallel < 1 or flags.seeds < 1:
        raise checks.ConfigError("--parallel and --seeds must be at least 1.")
    config_file = flags["config"].config_filename
    common = dict(flags["config"].override_values)  # --config.K=V given to the sweep: every trial's
    declared = load_sweep(config_file)
    jobs = []
    for t in expand(declared, flags.config.seed, flags.seeds):
        workdir = os.path.join(flags.workdir, t.name)
        args = train_args(config_file, workdir, {**common, **t.overrides, "seed": t.seed})
        jobs.append((t, workdir, args, trial_config(flags.config, t.overrides, t.seed)))
    checks.check_workdir(flags.workdir)
    axes = varying_keys(declared)
    write_json(os.path.join(flags.workdir, "sweep.json"), {
        "config": config_file, "config_overrides": common, "seeds": flags.seeds, "axes": axes,
        "fixed": {k: v for k, v in declared[0].items() if k not in axes and k != "seed"},
        "trials": [{"name": t.name, "group": t.group, "seed": t.seed, "overrides": t.overrides,
                    "command": printable(a)} for t, _, a, _ in jobs]})
    if flags.print_commands:
        print("\n".join(printable(a) for _, _, a, _ in jobs))
        return 0

    def say(message: str) -> None:
        print(f"strata: sweep: {message}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    lock = _flock(os.path.join(flags.workdir, ".sweep.lock"), wait=False)
    os.ftruncate(lock, 0)
    os.pwrite(lock, str(os.getpid()).encode(), 0)
    try:
        todo = [j for j in jobs if not is_finished(j[1], j[3])]
        say(f"{len(jobs)} trials of {config_file} in {flags.workdir}: {len(jobs) - len(todo)} "
            f"finished already (skipped), {len(todo)} to run, {flags.parallel} at a time")
        if flags.parallel > 1 and len(todo) > 1:
            _prepare_data([j[3] for j in todo])
        outcome, interrupted = run_trials(todo, flags.parallel, say)
    except KeyboardInterrupt:  # before any trial started
        say("interrupted. Rerun the same command to resume.")
        return EXIT_PREEMPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        os.close(lock)
    count = lambda what: sum(v.startswith(what) for v in outcome.values())  # noqa: E731
    say(f"{len(jobs)} trials: {count('done')} ran now, {len(jobs) - len(todo) + count('skipped')} had "
        f"finished before, {count('failed')} failed" + (f", {count('interrupted')} interrupted"
                                                         if interrupted else "")
        + f". Report: python run.py report {flags.workdir}")
    for name, why in outcome.items():
        if why.startswith("failed"):
            say(f"  {name}: {why}")
    if interrupted:
        return EXIT_PREEMPTED
    return EXIT_FAILED if count("failed") else 0


def cmd_report(args: list[str], flags) -> int:
    from train import report
    path = args[0] if args else flags.workdir
    if not path or len(args) > 1:
        raise checks.ConfigError("usage: python run.py report DIR (a sweep, or any run directory)")
    print(report.write_report(path))
    return 0
