"""SLURM on the one-node test cluster (tests/cluster/slurm_up.sh; the `slurm` fixture fails
these tests in CI and skips them elsewhere when it is not running)."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np

from helpers import REPO
from train.checkpoints import read_state

STEPS = 10
TINY = ["--config.model.depth=8", "--config.model.width=4", f"--config.train.steps={STEPS}",
        "--config.train.batch_size=16", "--config.train.log_every=1", "--config.train.eval_every=0",
        f"--config.train.checkpoint_every={STEPS}", "--config.train.progress=False",
        "--config.train.eval_max_batches=2", "--config.data.num_threads=1"]
TIMEOUT = 300


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
