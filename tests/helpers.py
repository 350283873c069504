"""Shared test helpers: tiny configs and running run.py as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(REPO, "run.py")


def tiny_resnet_config(tfds_dir: str, **train):
    """ResNet-8 on digits, a few steps: the smallest real run."""
    from configs.digits_resnet import get_config
    c = get_config()
    c.model.depth = 8
    c.model.width = 4
    c.data.data_dir = tfds_dir
    c.train.steps = train.get("steps", 6)
    c.train.batch_size = train.get("batch_size", 16)
    c.train.log_every = train.get("log_every", 2)
    c.train.eval_every = train.get("eval_every", 0)
    c.train.checkpoint_every = train.get("checkpoint_every", 3)
    c.train.eval_max_batches = 2
    c.train.progress = False
    c.optimizer.warmup_steps = 0
    return c


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess, output captured as text.

    The environment is this process's without XLA_FLAGS (so 1 CPU device unless `env`
    sets them), with `env` laid over it."""
    full_env = dict(os.environ)
    full_env.pop("XLA_FLAGS", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, RUN_PY, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
