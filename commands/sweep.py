"""`run.py sweep`: a config file's trials, each one an ordinary `run.py train` command.

    python run.py sweep --config configs/NAME.py[:ARG] --workdir DIR [--parallel N] [--seeds K]
    python run.py sweep ... --print_commands    # one train command per trial, for a cluster
    python run.py sweep ... --launcher slurm    # one SLURM job array instead (slurm.py)
    python run.py sweep --status DIR            # queued / running / done / failed per trial
    python run.py report DIR                    # DIR/report.md, report.csv, plots/ (report.py)

The trials come from the config file's `get_sweep(arg)`: a list of override dicts (built
with `product`, `zip_axes`, `random_search` from configs/common.py). A trial runs in
DIR/<name>, named by the overrides that vary across the sweep plus its seed, e.g.
`learning_rate=0.1,depth=20,seed=0`. A trial's `config` key (no config key) is the
config file's argument for that trial: one sweep can train different models. A trial
whose workdir holds its final checkpoint is skipped; any other is (re)started with its
train command, which resumes from its own last checkpoint. A failed trial is reported and the others go on. DIR/sweep.json lists the
trials for `report`.
"""
from __future__ import annotations

import ctypes
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import IO

import ml_collections

from commands.trials import (RUN_PY, Trial, expand, load_config, load_sweep, printable,
                             train_args, trial_config, trial_file, varying_keys)
from errors import EXIT_BUG, EXIT_PREEMPTED, ConfigError
from train import checks, files, paths


def is_finished(workdir: str, expected: ml_collections.ConfigDict) -> bool:
    """True when `workdir` ran this config and holds the checkpoint of its last step."""
    path = os.path.join(workdir, "config.json")
    if not files.exists(path):
        return False
    saved = json.loads(files.read_text(path))
    if checks.config_differences(saved, json.loads(expected.to_json_best_effort())):
        return False  # not ours: running it makes `train` refuse with the differences
    return files.isdir(os.path.join(workdir, "checkpoints", str(saved["train"]["steps"])))


# --- Running ----------------------------------------------------------------------------

_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    """Linux: a trial gets SIGTERM (so it saves a checkpoint and stops) if the sweep dies,
    even by SIGKILL, instead of training on as an orphan."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _log_tail(path: str) -> str:
    """The error line of a failed trial's log (else its last line)."""
    with open(path, errors="replace") as f:
        text = f.read()[-20000:]
    lines = [l.strip() for l in re.split(r"[\r\n]", text) if l.strip()]
    errors = [l for l in lines if l.startswith("strata: error:") or re.match(r"\w+(Error|Exception)\b", l)]
    return (errors or lines or ["(empty log)"])[-1][:300]


def _open_log(workdir: str) -> IO:
    """The trial's train.log, appended to; for a gs:// trial a local file that `_close_log`
    appends to the log object (a subprocess writes to a file descriptor, not a bucket)."""
    if not files.is_remote(workdir):
        return open(os.path.join(workdir, "train.log"), "a")
    return tempfile.NamedTemporaryFile("a", prefix="strata-train-", suffix=".log", delete=False)


def _close_log(workdir: str, log: IO) -> None:
    log.close()
    if files.is_remote(workdir):
        remote = os.path.join(workdir, "train.log")
        before = files.read_text(remote, errors="replace") if files.exists(remote) else ""
        with open(log.name, errors="replace") as f:
            files.write_text(remote, before + f.read())
        os.remove(log.name)


def _prepare_data(configs: list[ml_collections.ConfigDict]) -> None:
    """Embedded datasets are prepared once here, not by N trials racing to do it."""
    from data import sources
    done = set()
    for c in configs:
        key = (c.data.name, c.data.data_dir, c.data.files)
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
                files.makedirs(workdir)
                if not files.is_remote(workdir):
                    # A trial of a killed sweep may still be saving its checkpoint: wait for it.
                    # (In a bucket the trial's own lock refuses to start beside it, in one line.)
                    os.close(paths.exclusive_lock(os.path.join(workdir, ".lock"), "", wait=True, say=say))
                if is_finished(workdir, config):
                    outcome[trial.name] = "skipped"
                    continue
                log = _open_log(workdir)
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
                took = f"{time.time() - start:.0f}s"
                why = _log_tail(log.name) if proc.returncode else ""
                _close_log(workdir, log)
                if proc.returncode == 0:
                    outcome[trial.name] = "done"
                    say(f"done {trial.name} ({took})")
                else:
                    outcome[trial.name] = f"failed (exit {proc.returncode}): {why}"
                    say(f"FAILED {trial.name} (exit {proc.returncode}, {took}): {why} "
                        f"[log: {os.path.join(workdir, 'train.log')}]")
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
        for proc, (_, workdir, log, _) in running.items():
            _close_log(workdir, log)
        outcome.update((trial.name, "interrupted") for trial, *_ in running.values())
        return outcome, True
    return outcome, False


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_sweep(args: list[str], flags) -> int:
    from commands import slurm
    if flags.status:
        return slurm.print_status(flags.status)
    if flags.launcher == "slurm" and files.is_remote(flags.workdir or ""):
        raise ConfigError(f"--launcher slurm needs a --workdir on the cluster's shared filesystem, not "
                          f"{flags.workdir} (its batch script appends to each trial's train.log); "
                          "use --launcher local, or a gcsfuse mount of the bucket.")
    slurm.check_flags(flags)
    if args:
        raise ConfigError(f"unexpected argument(s) {' '.join(args)!r}; usage: python run.py sweep "
                                 "--config configs/NAME.py[:ARG] --workdir DIR [--parallel N] [--seeds K]")
    if not flags.workdir:
        raise ConfigError("sweep needs --workdir DIR; each trial runs in DIR/<trial name>.")
    if flags.parallel < 1 or flags.seeds < 1:
        raise ConfigError("--parallel and --seeds must be at least 1.")
    config_file = flags["config"].config_filename
    common = dict(flags["config"].override_values)  # --config.K=V given to the sweep: every trial's
    checks.check_scheme(flags.workdir)
    cloud = flags.launcher in ("tpu-vm", "gke")
    if cloud:
        from commands import gke, tpu
        (tpu if flags.launcher == "tpu-vm" else gke).check_flags(flags)
        if files.is_remote(flags.workdir):
            raise ConfigError(f"--launcher {flags.launcher} writes the commands you run into --workdir, a "
                              f"local folder (not {flags.workdir}); the trials' workdirs are --cloud_workdir.")
        checks.check_scheme(flags.cloud_workdir)
        if not flags.cloud_workdir.startswith(("gs://", "/")):
            raise ConfigError(f"--cloud_workdir must be gs://BUCKET/PATH or an absolute path that "
                              f"every worker sees (a gcsfuse mount), got {flags.cloud_workdir!r}.")
    elif flags.cloud_workdir:
        raise ConfigError("--cloud_workdir is for --launcher tpu-vm or gke.")
    declared = load_sweep(config_file)
    jobs = []
    for t in expand(declared, flags.config.seed, flags.seeds):
        workdir = (flags.cloud_workdir.rstrip("/") + "/" + t.name) if cloud else os.path.join(flags.workdir, t.name)
        file, overrides = trial_file(config_file, t.overrides)
        args = train_args(file, workdir, {**common, **overrides, "seed": t.seed})
        config = (trial_config(flags.config, overrides, t.seed) if file == config_file else
                  trial_config(load_config(file), {**common, **overrides}, t.seed))
        jobs.append((t, workdir, args, config))
    checks.check_workdir(flags.workdir)
    axes = varying_keys(declared)
    paths.write_json(os.path.join(flags.workdir, "sweep.json"), {
        "config": config_file, "config_overrides": common, "seeds": flags.seeds, "axes": axes,
        "fixed": {k: v for k, v in declared[0].items() if k not in axes and k != "seed"},
        "trials": [{"name": t.name, "group": t.group, "seed": t.seed, "overrides": t.overrides,
                    "command": printable(a)} for t, _, a, _ in jobs]})
    if flags.print_commands:
        print("\n".join(printable(a) for _, _, a, _ in jobs))
        return 0

    def say(message: str) -> None:
        print(f"strata: sweep: {message}", file=sys.stderr, flush=True)

    if cloud:
        named = [(t.name, a) for t, _, a, _ in jobs]
        if flags.launcher == "tpu-vm":
            print(f"strata: sweep: wrote {len(named)} TPU VM command(s); run them: "
                  f"bash {shlex.quote(tpu.write(flags.workdir, named, flags))}")
        else:
            print(f"strata: sweep: wrote {len(named)} JobSet manifest(s); run them: "
                  f"kubectl apply -f {shlex.quote(gke.write(flags.workdir, named, flags) + '/')}")
        return 0
    if flags.launcher == "slurm":
        return slurm.submit(flags.workdir, jobs, flags, say, is_finished=is_finished,
                            prepare_data=_prepare_data)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    release = paths.hold_lock(os.path.join(flags.workdir, ".sweep.lock"),
                              "another sweep (pid {pid}) is running in {folder}; wait for it.")
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
        release()
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
    return EXIT_BUG if count("failed") else 0
