"""SLURM on the one-node test cluster (tests/cluster/slurm_up.sh; the `slurm` fixture fails
these tests in CI and skips them elsewhere when it is not running)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from commands import slurm as launcher
from helpers import REPO, run_cli
from train.checkpoints import read_state

STEPS = 10
TINY = ["--config.model.depth=8", "--config.model.width=4", f"--config.train.steps={STEPS}",
        "--config.train.batch_size=16", "--config.train.log_every=1", "--config.train.eval_every=0",
        f"--config.train.checkpoint_every={STEPS}", "--config.train.progress=False",
        "--config.train.eval_max_batches=2", "--config.data.num_threads=1"]
TIMEOUT = 300
SWEEP = "tests/sweep_config.py:two"  # 2 trials of 8 steps
TRIALS = ["learning_rate=0.05,seed=0", "learning_rate=0.2,seed=0"]


def _env(devices: int, tfds_dir: str) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               TFDS_DATA_DIR=tfds_dir)
    return env


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    """Waits for all, killing every process group if any overruns: the test never hangs."""
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # srun's SIGKILL cancels its job step
                p.wait()
    return outs


def _metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_cluster_runs_two_tasks(slurm):
    out = subprocess.run(["srun", "-n", "2", "--time=1", "bash", "-c", "echo $SLURM_PROCID/$SLURM_NTASKS"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["0/2", "1/2"]


def test_srun_two_tasks_match_one_process(slurm, tfds_dir, tmp_path):
    """`srun -n 2 python run.py train ...`, no extra flags: two processes of 4 devices train
    like one of 8 (JAX reads the SLURM environment; CPU collectives over gloo)."""
    from data.sources import prepare
    prepare("digits", tfds_dir)  # once, before two processes could race to do it
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    run_py = [sys.executable, os.path.join(REPO, "run.py"), "train", *TINY]
    start = lambda cmd, env: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,  # noqa: E731
                                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    procs = [start(["srun", "-n", "2", "--time=10", "--kill-on-bad-exit=1", *run_py, "--workdir", multi],
                   _env(4, tfds_dir)),
             start([*run_py, "--workdir", single], _env(8, tfds_dir))]
    outs = _finish(procs)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    with open(os.path.join(multi, "manifest.json")) as f:
        assert json.load(f)["devices"] == {"count": 8, "kind": "cpu", "processes": 2}
    m, s = _metrics(multi), _metrics(single)
    assert [r["step"] for r in m] == list(range(1, STEPS + 1))  # process 0 alone writes them
    np.testing.assert_allclose([r["train/loss"] for r in m], [r["train/loss"] for r in s], rtol=1e-5)
    assert m[-1].keys() == s[-1].keys()
    for key in s[-1]:
        np.testing.assert_allclose(m[-1][key], s[-1][key], rtol=1e-5, atol=1e-6, err_msg=key)
    state = lambda w: jax.tree.leaves(read_state(os.path.join(w, "checkpoints", str(STEPS), "state"))["params"])  # noqa: E731
    for a, b in zip(state(multi), state(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _wait_for(sweep_dir: str, states: set[str], timeout: float = TIMEOUT) -> list[tuple[str, str, str]]:
    """Polls the trials' states until all are in `states`."""
    deadline = time.time() + timeout
    while True:
        rows = launcher.trial_states(sweep_dir)
        if all(state in states for _, state, _ in rows) or time.time() > deadline:
            return rows
        time.sleep(2)


def _jobs(sweep_dir) -> list[dict]:
    with open(os.path.join(sweep_dir, "slurm_jobs.json")) as f:
        return json.load(f)["jobs"]


def test_array_spec():
    assert launcher.array_spec([0, 1, 2, 5, 7, 8], None) == "0-2,5,7-8"
    assert launcher.array_spec([3], 2) == "3%2"


def test_slurm_launcher_mistakes_are_one_line(tmp_path):
    sweep = ["sweep", "--config", SWEEP, "--workdir", str(tmp_path / "sw")]
    no_sbatch = run_cli(*sweep, "--launcher", "slurm", env={"PATH": os.path.dirname(sys.executable)})
    assert no_sbatch.returncode == 2
    assert no_sbatch.stderr.strip() == "strata: error: sbatch not found; install SLURM or use --launcher local."
    local = run_cli(*sweep, "--slurm_time", "10")
    assert local.returncode == 2 and "--slurm_time is for --launcher slurm" in local.stderr
    assert len(local.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "sw" / "sweep.json")


def test_sweep_as_a_job_array(slurm, tfds_dir, tmp_path):
    """One sbatch job array, one task per trial; --status follows it; reruns submit only
    what is neither done nor queued/running."""
    env = {"TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"}
    sweep_dir = str(tmp_path / "sw")
    command = ["sweep", "--config", SWEEP, "--workdir", sweep_dir, "--launcher", "slurm",
               "--slurm_max_parallel", "2", "--slurm_time", "10", "--slurm_cpus_per_task", "1"]
    first = run_cli(*command, env=env)
    assert first.returncode == 0, first.stderr
    assert "submitted job" in first.stderr
    [job] = _jobs(sweep_dir)
    try:
        with open(os.path.join(sweep_dir, "slurm_sweep.sh")) as f:
            script = f.read()
        for option in ("--array=0-1%2", "--time=10", "--cpus-per-task=1", "--ntasks=1"):
            assert f"#SBATCH {option}\n" in script
        assert job["tasks"] == {"0": TRIALS[0], "1": TRIALS[1]}
        early = launcher.trial_states(sweep_dir)
        assert [name for name, _, _ in early] == TRIALS
        assert {state for _, state, _ in early} <= {"queued", "running", "done"}
        again = run_cli(*command, env=env)  # while they are queued or running: nothing to submit
        assert again.returncode == 0 and "nothing to submit" in again.stderr, again.stderr
        assert len(_jobs(sweep_dir)) == 1

        rows = _wait_for(sweep_dir, {"done", "failed", "interrupted", "not started"})
        assert [state for _, state, _ in rows] == ["done", "done"], rows
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)  # never leave jobs behind
    for name in TRIALS:
        assert os.path.isdir(os.path.join(sweep_dir, name, "checkpoints", "8"))
        with open(os.path.join(sweep_dir, name, "metrics.jsonl")) as f:
            assert json.loads(f.readlines()[-1])["step"] == 8
        with open(os.path.join(sweep_dir, name, "train.log")) as f:
            assert f.read().rstrip().endswith("# strata sweep: exit 0")
    status = run_cli("sweep", "--status", sweep_dir)
    assert status.returncode == 0, status.stderr
    assert [line.split()[:2] for line in status.stdout.splitlines()[:2]] == [["done", n] for n in TRIALS]
    assert status.stdout.splitlines()[-1] == "2 trials: 2 done"
    done = run_cli(*command, env=env)
    assert done.returncode == 0 and "2 done, 0 queued or running, 0 to submit" in done.stderr, done.stderr
    assert len(_jobs(sweep_dir)) == 1

    # A trial that lost its final checkpoint is resubmitted alone (and cancelled here).
    os.rename(os.path.join(sweep_dir, TRIALS[1], "checkpoints", "8"),
              os.path.join(sweep_dir, TRIALS[1], "checkpoints-moved-8"))
    partial = run_cli(*command, env=env)
    assert partial.returncode == 0, partial.stderr
    second = _jobs(sweep_dir)[-1]
    subprocess.run(["scancel", second["job_id"]], check=False)
    assert second["tasks"] == {"1": TRIALS[1]} and second["array"] == "1%2"
    with open(os.path.join(sweep_dir, "slurm_sweep.sh")) as f:
        assert "#SBATCH --array=1%2\n" in f.read()


def test_failed_trials_show_as_failed(slurm, tfds_dir, tmp_path):
    sweep_dir = str(tmp_path / "sw")
    submitted = run_cli("sweep", "--config", "tests/sweep_config.py:fail=true", "--workdir", sweep_dir,
                        "--launcher", "slurm", env={"TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"})
    assert submitted.returncode == 0, submitted.stderr
    [job] = _jobs(sweep_dir)
    try:
        rows = _wait_for(sweep_dir, {"done", "failed", "interrupted", "not started"})
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)
    assert [state for _, state, _ in rows] == ["failed", "failed"], rows
    assert all(detail.startswith("exit 2, strata: error:") and "depth" in detail for _, _, detail in rows), rows


def _poll(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def _read(path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _training_in_attempt(log_path, metrics_path, attempt: int) -> bool:
    """Attempt `attempt` (0 = first) of the trial has logged a step it trained itself."""
    text = _read(log_path)
    starts = [m.end() for m in launcher.START_LINE.finditer(text)]
    if len(starts) <= attempt:
        return False
    resumed = re.search(r"resumed from step (\d+)", text[starts[attempt]:])
    if attempt and not resumed:
        return False
    rows = [json.loads(line) for line in _read(metrics_path).splitlines() if line.strip()]
    return bool(rows) and rows[-1]["step"] > (int(resumed.group(1)) if resumed else 0)


def test_preempted_trials_save_requeue_and_end_like_an_uninterrupted_one(slurm, tfds_dir, tmp_path):
    """Trial 0 of an array is stopped twice mid-run: SIGUSR1 (the time limit is near: it
    saves and requeues itself), then SIGTERM (preemption: it saves, exits 75, and
    `scontrol requeue` puts it back). It ends exactly like trial 1, which differs only in
    its progress bar and runs uninterrupted."""
    sweep_dir = tmp_path / "sw"
    hit, reference = sweep_dir / "progress=False,seed=0", sweep_dir / "progress=True,seed=0"
    submitted = run_cli("sweep", "--config", "tests/sweep_config.py:same,steps=60", "--workdir",
                        str(sweep_dir), "--launcher", "slurm", "--slurm_max_parallel", "2",
                        env={"TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"})
    assert submitted.returncode == 0, submitted.stderr
    [job] = _jobs(sweep_dir)
    task = f"{job['job_id']}_0"
    log, metrics = hit / "train.log", hit / "metrics.jsonl"
    states = lambda: dict((n, s) for n, s, _ in launcher.trial_states(str(sweep_dir)))  # noqa: E731
    try:
        _poll(lambda: _training_in_attempt(log, metrics, 0), "the first attempt to train")
        subprocess.run(["scancel", "--signal=USR1", "--batch", task], check=True)
        _poll(lambda: _training_in_attempt(log, metrics, 1), "the self-requeued attempt to train")
        subprocess.run(["scancel", "--signal=TERM", "--batch", task], check=True)
        _poll(lambda: states()[hit.name] == "interrupted", "the preempted trial to stop")
        assert "(restart 2)" not in _read(log)  # SIGTERM alone does not requeue
        subprocess.run(["scontrol", "requeue", task], check=True)
        rows = _wait_for(str(sweep_dir), {"done", "failed", "interrupted", "not started"})
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)
    assert [state for _, state, _ in rows] == ["done", "done"], rows
    text = _read(log)
    assert re.findall(r"\(restart (\d+)\)", text) == ["0", "1", "2"]
    assert launcher.EXIT_LINE.findall(text) == ["75", "75", "0"]
    assert text.count("strata: stopped by signal at step") == 2 and "requeued " + task in text
    with open(metrics, "rb") as a, open(reference / "metrics.jsonl", "rb") as b:
        assert a.read() == b.read()
    assert json.loads(_read(metrics).splitlines()[-1])["step"] == 60
    final = lambda w: read_state(os.path.join(w, "checkpoints", "60", "state"))  # noqa: E731
    for x, y in zip(jax.tree.leaves(final(hit)), jax.tree.leaves(final(reference))):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_sweep_values_reach_slurm_trials_literally(slurm, tfds_dir, tmp_path):
    """A workdir and a sweep value holding `$(...)`, backticks, quotes and spaces are
    passed to each trial's run.py as written, never run by a shell."""
    import uuid
    marker = str(tmp_path / f"PWNED_{uuid.uuid4().hex}")
    prompt = f"a$(touch {marker})b `touch {marker}` 'q' \"d\" ; touch {marker}"
    sweep_dir = str(tmp_path / f"sw x$(touch {marker})")
    r = run_cli("sweep", "--config", SWEEP, "--workdir", sweep_dir, "--launcher", "slurm",
                "--slurm_time", "10", "--slurm_cpus_per_task", "1", f"--config.sample.prompt={prompt}",
                env={"TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr
    [job] = _jobs(sweep_dir)
    try:
        rows = _wait_for(sweep_dir, {"done", "failed", "interrupted", "not started"})
        assert [state for _, state, _ in rows] == ["done", "done"], rows
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)
    for name in TRIALS:
        with open(os.path.join(sweep_dir, name, "config.json")) as f:
            assert json.load(f)["sample"]["prompt"] == prompt
    assert not os.path.exists(marker)
