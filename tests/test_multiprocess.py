"""Two real processes (jax.distributed on localhost, CPU collectives, 4 devices each) train
exactly like one process with 8 devices: same losses, same parameters."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import portpicker
import jax

from helpers import REPO
from train.checkpoints import read_state

TINY = ["--config.model.depth=8", "--config.model.width=4", "--config.train.steps=20",
        "--config.train.batch_size=16", "--config.train.log_every=1", "--config.train.eval_every=0",
        "--config.train.checkpoint_every=10", "--config.train.progress=False",
        "--config.train.eval_max_batches=2", "--config.data.num_threads=1"]
TIMEOUT = 420


def _env(devices: int, tfds_dir: str) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               TFDS_DATA_DIR=tfds_dir)
    return env


def _start(args, env):
    return subprocess.Popen([sys.executable, os.path.join(REPO, "run.py"), "train", *TINY, *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(procs):
    """Waits for all, killing every process group if any overruns: the test never hangs."""
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return outs


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return np.array([json.loads(l)["train/loss"] for l in f if "train/loss" in l])


def _params(workdir):
    state = read_state(os.path.join(workdir, "checkpoints", "20", "state"))
    return jax.tree.leaves(state["params"])


def test_two_processes_match_one_process(tfds_dir, tmp_path):
    from data.sources import prepare
    prepare("digits", tfds_dir)  # once, before two processes could race to do it
    port = portpicker.pick_unused_port()
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    procs = [_start(["--workdir", multi, f"--coordinator_address=localhost:{port}",
                     "--num_processes=2", f"--process_id={i}"], _env(4, tfds_dir)) for i in range(2)]
    procs.append(_start(["--workdir", single], _env(8, tfds_dir)))
    outs = _finish(procs)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
    assert len(_losses(multi)) == 20
    for a, b in zip(_params(multi), _params(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
