"""`run.py sweep --launcher slurm`: a sweep's trials as one SLURM job array, and
`run.py sweep --status DIR`: where each trial of a sweep stands.

    python run.py sweep --config configs/NAME.py --workdir DIR --launcher slurm \\
        [--slurm_partition P] [--slurm_time 4:00:00] [--slurm_gpus_per_task 1] \\
        [--slurm_cpus_per_task 8] [--slurm_max_parallel M]
    python run.py sweep --status DIR

Submitting writes DIR/slurm_sweep.sh, a batch script whose array task i runs trial i of
DIR/sweep.json (the same `run.py train` command, logging to DIR/<trial>/train.log), submits
it with `sbatch --array=...%M` and returns; DIR/slurm_jobs.json records each submission's
job id and trials. Rerunning the same command submits only the trials that are neither done
(final checkpoint) nor queued or running; the others resume from their last checkpoint.

Preemption: the script asks for `--requeue` and `--signal=B:USR1@120`. SIGTERM (scancel,
preemption) or SIGUSR1 make the trial save a checkpoint and exit 75; after SIGUSR1 (the time
limit is near) the array task requeues itself; a task requeued by SLURM or by
`scontrol requeue JOB_TASK` resumes from its checkpoint.

The status comes from `squeue` (and `sacct` where the cluster keeps accounting) for the
recorded jobs, else from the workdirs: a final checkpoint is done, an exit status or an
error line at the end of train.log is failed.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from commands.trials import RUN_PY
from errors import ConfigError
from train import files, paths

SCRIPT = "slurm_sweep.sh"
WARN_S = 120  # the batch script gets SIGUSR1 this long before the time limit: save, requeue
JOBS = "slurm_jobs.json"
LOGS = "slurm-logs"
EXIT_LINE = re.compile(r"^# strata sweep: exit (\d+)", re.M)
START_LINE = re.compile(r"^# \S+ strata sweep: ", re.M)

# SLURM job states (squeue %T, sacct State) -> a trial's state while its job is known.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED", "STOPPED"}


def check_flags(flags) -> None:
    """The launcher's flags make sense together; one line otherwise."""
    given = [n for n in ("slurm_partition", "slurm_time", "slurm_gpus_per_task",
                         "slurm_cpus_per_task", "slurm_max_parallel") if flags[n].present]
    if flags.launcher != "slurm":
        if given:
            raise ConfigError(f"--{given[0]} is for --launcher slurm; add --launcher slurm or drop it.")
        return
    if flags["parallel"].present:
        raise ConfigError("--parallel is for --launcher local; with --launcher slurm use "
                          "--slurm_max_parallel M.")
    for name, least in (("slurm_max_parallel", 1), ("slurm_cpus_per_task", 1), ("slurm_gpus_per_task", 0)):
        if flags[name].value is not None and flags[name].value < least:
            raise ConfigError(f"--{name} must be at least {least}, got {flags[name].value}.")
    if shutil.which("sbatch") is None:
        raise ConfigError("sbatch not found; install SLURM or use --launcher local.")


# --- Submitting -------------------------------------------------------------------------

def array_spec(indices: list[int], max_parallel: int | None) -> str:
    """`[0, 1, 2, 5]`, 2 -> `0-2,5%2`."""
    parts, start = [], None
    for i, n in enumerate(indices):
        start = n if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}-{n}")
            start = None
    return ",".join(parts) + (f"%{max_parallel}" if max_parallel else "")


def _directive(option: str) -> str:
    """`--name=value` as an #SBATCH directive: sbatch splits these at spaces unless the value
    is in double quotes (which it takes literally, `$(...)` included; it has no escape for `"`)."""
    name, _, value = option.partition("=")
    if '"' in value or "\n" in value:
        raise ConfigError(f"{name} {value!r}: SLURM batch directives cannot hold a double quote or a "
                          "newline; choose another --workdir (or working directory).")
    return f'{name}="{value}"' if re.search(r"[\s'`$;&|<>()\\]", value) else option


def batch_script(sweep_dir: str, trials: list[tuple[str, list[str]]], spec: str, flags) -> str:
    """The batch script of one submission: array task i runs trial i's train command
    (`trials`: (workdir, run.py arguments) in sweep.json's order)."""
    sweep_dir = os.path.abspath(sweep_dir)
    name = "strata-sweep-" + re.sub(r"[^\w.-]", "_", os.path.basename(sweep_dir))
    options = [f"--job-name={name}", f"--array={spec}", "--ntasks=1",
               f"--chdir={os.getcwd()}", f"--output={os.path.join(sweep_dir, LOGS, '%A_%a.out')}",
               "--open-mode=append", "--requeue", f"--signal=B:USR1@{WARN_S}"]
    for flag, option in (("slurm_partition", "partition"), ("slurm_time", "time"),
                         ("slurm_cpus_per_task", "cpus-per-task"), ("slurm_gpus_per_task", "gpus-per-task")):
        if flags[flag].value is not None:
            options.append(f"--{option}={flags[flag].value}")
    cases = "\n".join(f"  {i}) workdir={shlex.quote(workdir)}; args=({shlex.join(args)});;"
                      for i, (workdir, args) in enumerate(trials))
    return f"""#!/bin/bash
# Strata sweep {sweep_dir}: array task i runs trial i of sweep.json, exactly its
# `run.py train` command, logging to <trial>/train.log. Written and submitted by
#   python run.py sweep ... --launcher slurm   (resubmit by rerunning that command)
{chr(10).join('#SBATCH ' + _directive(o) for o in options)}
set -u
case "${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array}}" in
{cases}
  *) echo "strata sweep: no trial $SLURM_ARRAY_TASK_ID in this sweep" >&2; exit 2;;
esac
mkdir -p "$workdir"
log="$workdir/train.log"
task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
# SIGTERM (scancel, preemption) or SIGUSR1 ({WARN_S} s before the time limit) reach this shell;
# the trial gets SIGTERM, saves a checkpoint and exits 75. After SIGUSR1 the task requeues
# itself and resumes in its next allocation; after SIGTERM it is left to SLURM (a preempted
# job is requeued by it, a cancelled one stays cancelled).
child=; requeue=0; stopped=0
stop() {{ stopped=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null; }}
trap stop TERM
trap 'requeue=1; stop' USR1
echo "# $(date -Iseconds) strata sweep: slurm job $task (restart ${{SLURM_RESTART_COUNT:-0}}):" \\
     "python run.py ${{args[*]}}" >> "$log"
{shlex.quote(sys.executable)} {shlex.quote(RUN_PY)} "${{args[@]}}" >> "$log" 2>&1 &
child=$!
[ $stopped = 0 ] || kill -TERM "$child"  # a signal that came before the trial started
wait "$child"; code=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done  # a trap ended the wait
echo "# strata sweep: exit $code" >> "$log"
if [ $code = 75 ] && [ $requeue = 1 ]; then
  echo "# strata sweep: time limit near, requeued $task" >> "$log"
  scontrol requeue "$task"
fi
exit $code
"""


def submit(sweep_dir: str, jobs: list, flags, say, *, is_finished, prepare_data) -> int:
    """Submits the trials of `jobs` ((trial, workdir, args, config) in sweep.json's order)
    that are not finished, queued or running, as one job array; returns at once.
    `is_finished(workdir, config)` and `prepare_data(configs)` come from the local launcher."""
    lock = paths.exclusive_lock(os.path.join(sweep_dir, ".sweep.lock"),
                                "another sweep (pid {pid}) is using {folder}; wait for it.")
    try:
        states = {name: state for name, state, _ in trial_states(sweep_dir)}
        done = [t.name for t, workdir, _, config in jobs if is_finished(workdir, config)]
        active = [t.name for t, *_ in jobs if states.get(t.name) in ("queued", "running")]
        todo = [i for i, (t, *_) in enumerate(jobs) if t.name not in done and t.name not in active]
        say(f"{len(jobs)} trials in {sweep_dir}: {len(done)} done, {len(active)} queued or running, "
            f"{len(todo)} to submit")
        if not todo:
            say(f"nothing to submit. Status: python run.py sweep --status {sweep_dir}")
            return 0
        if len(todo) > 1:
            prepare_data([jobs[i][3] for i in todo])  # once here, not by trials racing to do it
        spec = array_spec(todo, flags.slurm_max_parallel)
        script = os.path.join(sweep_dir, SCRIPT)
        os.makedirs(os.path.join(sweep_dir, LOGS), exist_ok=True)
        with open(script, "w") as f:
            f.write(batch_script(sweep_dir, [(w, a) for _, w, a, _ in jobs], spec, flags))
        os.chmod(script, 0o755)
        out = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
        if out.returncode:
            why = " ".join((out.stderr or out.stdout).split()) or f"exit {out.returncode}"
            raise ConfigError(f"sbatch refused {script}: {why}")
        job_id = out.stdout.strip().split(";")[0]
        record = _read_jobs(sweep_dir)
        record.append({"job_id": job_id, "array": spec,
                       "submitted": datetime.datetime.now().isoformat(timespec="seconds"),
                       "tasks": {str(i): jobs[i][0].name for i in todo}})
        paths.write_json(os.path.join(sweep_dir, JOBS), {"jobs": record})
    finally:
        os.close(lock)
    say(f"submitted job {job_id} (array {spec}) from {script}. "
        f"Status: python run.py sweep --status {sweep_dir}")
    return 0


# --- Status -----------------------------------------------------------------------------

def _read_jobs(sweep_dir: str) -> list[dict]:
    path = os.path.join(sweep_dir, JOBS)
    if not files.exists(path):
        return []
    return json.loads(files.read_text(path))["jobs"]


def _query(command: list[str]) -> list[list[str]]:
    """`|`-separated rows of a SLURM query; none when the command is missing or fails
    (e.g. `sacct` on a cluster without an accounting database)."""
    if shutil.which(command[0]) is None:
        return []
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return []
    if out.returncode:
        return []
    return [line.split("|") for line in out.stdout.splitlines() if line.strip()]


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """`JOB_TASK` -> SLURM state of the array tasks of `job_ids`: sacct's (where the cluster
    keeps accounting), overridden by squeue's for the jobs it still knows."""
    if not job_ids:
        return {}
    states = {}
    for job, state in _query(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"]):
        states[job] = state.split()[0] if state.split() else "UNKNOWN"
    for job, task, state in _query(["squeue", "-h", "-r", "--states=all", "-j", ",".join(job_ids),
                                    "-o", "%F|%K|%T"]):
        states[f"{job}_{task}"] = state
    return states


def _held(lock_path: str) -> bool:
    """Whether a process on this host holds the workdir's `flock` (a run is training), or a
    live run holds a bucket workdir's lock object."""
    if files.is_remote(lock_path):
        from train import bucket
        return bucket.held(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _finished(workdir: str) -> bool:
    """The workdir holds the checkpoint of the last step its config.json asks for."""
    try:
        steps = json.loads(files.read_text(os.path.join(workdir, "config.json")))["train"]["steps"]
    except (OSError, ValueError, KeyError):
        return False
    return files.isdir(os.path.join(workdir, "checkpoints", str(steps)))


def _last_attempt(log_path: str) -> tuple[int | None, str]:
    """(exit status or None, error line) of the last attempt logged in a trial's train.log."""
    try:
        text = files.read_text(log_path, errors="replace")[-50000:]
    except OSError:
        return None, ""
    starts = list(START_LINE.finditer(text))
    text = text[starts[-1].end():] if starts else text
    exits = EXIT_LINE.findall(text)
    lines = [l.strip() for l in re.split(r"[\r\n]", text) if l.strip() and not l.startswith("#")]
    errors = [l for l in lines if l.startswith("strata: error:") or re.match(r"\w+(Error|Exception)\b", l)]
    return (int(exits[-1]) if exits else None), (errors[-1][:300] if errors else "")


def trial_states(sweep_dir: str) -> list[tuple[str, str, str]]:
    """(trial name, state, detail) for each trial of DIR/sweep.json; state is one of
    queued, running, done, failed, interrupted (stopped by a signal after saving: resubmit
    to resume), not started."""
    if files.is_remote(sweep_dir):
        from train import bucket
        bucket.check_bucket(sweep_dir)
    try:
        trials = [t["name"] for t in json.loads(files.read_text(os.path.join(sweep_dir, "sweep.json")))["trials"]]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"{sweep_dir!r} holds no sweep (no readable sweep.json); "
                          "give the --workdir of a `run.py sweep`.") from None
    latest = {}  # trial -> its array task in the latest submission that ran it
    jobs = _read_jobs(sweep_dir)
    for job in jobs:
        latest.update((name, f"{job['job_id']}_{task}") for task, name in job["tasks"].items())
    slurm = slurm_states([job["job_id"] for job in jobs])
    out = []
    for name in trials:
        workdir = os.path.join(sweep_dir, name)
        task = latest.get(name)
        state = slurm.get(task, "")
        where = f"slurm {task}" if task else ""
        code, error = _last_attempt(os.path.join(workdir, "train.log"))
        if state in QUEUED:
            out.append((name, "queued", where))
        elif state in RUNNING or _held(os.path.join(workdir, ".lock")):
            out.append((name, "running", where))
        elif _finished(workdir):
            out.append((name, "done", ""))
        elif code == 75 or (code is None and state == "PREEMPTED"):
            out.append((name, "interrupted", "stopped by a signal after saving; rerun the sweep to resume"))
        elif code or error or state in ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"):
            why = ", ".join(w for w in (f"exit {code}" if code else state.lower(), error) if w)
            out.append((name, "failed", why))
        elif files.exists(os.path.join(workdir, "train.log")):
            out.append((name, "interrupted", state.lower() or "stopped before its last step; rerun the sweep to resume"))
        else:
            out.append((name, "not started", state.lower()))
    return out


def print_status(sweep_dir: str) -> int:
    """Prints one line per trial and a count per state."""
    rows = trial_states(sweep_dir)
    width = max(len(name) for name, _, _ in rows)
    for name, state, detail in rows:
        print(f"{state:<12} {name:<{width}}  {detail}".rstrip())
    counts = {}
    for _, state, _ in rows:
        counts[state] = counts.get(state, 0) + 1
    print(f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
