"""The one training loop. It knows tasks and configs, never a model's name.

Resume order (written once, here): a checkpoint in WORKDIR, else `checkpoint.init_from`,
else a fresh start. Per step: `state, metrics = train_step(state, batch)` with the state
donated and no host sync; metrics are fetched only every `train.log_every` steps.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from data import pipeline, sources
from models import build_model
from train import checkpoints, manifest, sharding, step as step_lib, writers
from train.evaluate import run_eval, to_global
from train.optimizers import build_optimizer
from train.state import abstract_state_and_shardings, count_params, create_train_state
from train.tasks import TaskContext, build_task

log = logging.getLogger("strata")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the run stopped cleanly after a signal; rerun to resume


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. the loss diverged); the message says what to do."""


class Preempted(SystemExit):
    """Raised after the checkpoint for a SIGTERM/SIGINT is safely written."""

    def __init__(self, step: int):
        super().__init__(EXIT_PREEMPTED)
        self.step = step


class _SignalFlag:
    """Turns SIGTERM/SIGINT into a flag the loop reads between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def example_batch(source, preprocess: str) -> dict:
    """A batch of one preprocessed example: enough for `model.init` to see every shape."""
    from data import ops
    ex = ops.compose(preprocess)(source[0], np.random.default_rng(0))
    return {k: np.asarray(v)[None] for k, v in ex.items()}


class Experiment:
    """Everything a config describes, built once: mesh, data, model, task, optimizer, state.

    Used by `train` and by `run.py eval|sample`, so all of them build things identically.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, need_train_data: bool = True):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        c = config
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
        sharding.check_batch(c.train.batch_size, self.mesh)
        self.eval_batch_size = c.train.get("eval_batch_size", 0) or c.train.batch_size
        sharding.check_batch(self.eval_batch_size, self.mesh)
        self.rules = sharding.rules_from_config(c.mesh.get("rules", ()))
        self.model = build_model(**c.model)
        self.task = build_task(**c.task)
        self.tx = build_optimizer(c.optimizer, c.train.steps)
        self.train_source, self.data_info = sources.open_split(c.data, c.data.train_split)
        self.eval_source = None
        if c.data.get("eval_split"):
            self.eval_source, _ = sources.open_split(c.data, c.data.eval_split)
        self.example = example_batch(self.train_source, c.data.preprocess)
        self.ema = c.train.get("ema_decay", 0.0) > 0
        self.abstract_state, self.state_shardings = abstract_state_and_shardings(
            self.model, self.task, self.tx, self.example, c.seed, self.ema, self.mesh, self.rules)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.checkpointer = checkpoints.Checkpointer(
            os.path.join(self.workdir, "checkpoints"), keep=c.checkpoint.keep,
            best_metric=c.checkpoint.get("best_metric") or None,
            best_mode=c.checkpoint.get("best_mode", "max"),
            async_save=c.checkpoint.get("async_save", True))
        self.eval_step = step_lib.jit_eval_step(self.model, self.task, self.state_shardings,
                                                self.batch_sharding)

    def train_iterator(self):
        c = self.config
        ds = pipeline.train_dataset(
            self.train_source, global_batch_size=c.train.batch_size, preprocess=c.data.preprocess,
            seed=c.seed, process_index=jax.process_index(), process_count=jax.process_count(),
            num_threads=c.data.get("num_threads", 2))
        return iter(ds)

    def fresh_state(self):
        state, _ = create_train_state(self.model, self.task, self.tx, self.example, self.config.seed,
                                      self.ema, self.mesh, self.rules)
        return state

    def restore(self, step: int, data_iterator=None):
        target = checkpoints.abstract_with_shardings(self.abstract_state, self.state_shardings)
        if data_iterator is None:
            return self.checkpointer.restore_state_only(step, target)
        return self.checkpointer.restore(step, target, data_iterator)

    def evaluate(self, state) -> dict[str, float]:
        """Batched task metrics over the eval split, then the task's host-side extras."""
        if self.eval_source is None:
            return {}
        c = self.config
        means = run_eval(self.eval_step, state, self.eval_source, mesh=self.mesh,
                         batch_size=self.eval_batch_size,
                         preprocess=c.data.get("eval_preprocess", c.data.preprocess),
                         max_batches=c.train.get("eval_max_batches", 0) or None)
        means = self.task.finalize_eval(means)
        means.update(self.task.extra_eval(self.context(state)))
        return {f"eval/{k}": v for k, v in means.items()}

    def context(self, state) -> TaskContext:
        variables = {"params": state.eval_params(), **state.model_state}
        return TaskContext(self.model, variables, self.config, self.workdir, self.data_info,
                           self.mesh, jax.random.fold_in(state.rng, 2**31 - 2))


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    host = jax.device_get(history)
    return {f"train/{k}": float(np.mean([h[k] for h in host])) for k in host[0]}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the last
    metrics written. Raises `Preempted` after a signal, once the checkpoint is safe."""
    c = config
    os.makedirs(workdir, exist_ok=True)
    exp = Experiment(c, workdir)
    if jax.process_index() == 0:
        manifest.write_json(os.path.join(exp.workdir, "config.json"), manifest.config_to_dict(c))
        manifest.write_json(os.path.join(exp.workdir, "manifest.json"), manifest.build_manifest(c, exp.mesh))

    data_iter = exp.train_iterator()
    start = exp.checkpointer.latest_step()
    if start is not None:
        state = exp.restore(start, data_iter)
        resumed = f"resumed from step {start}"
    else:
        state, start = exp.fresh_state(), 0
        resumed = "fresh start"
    writer = writers.MetricWriter(exp.workdir, c.train.steps, start, progress=c.train.get("progress", True))
    writer.message(f"strata: {resumed}; {count_params(state.params):,} parameters; "
                   f"mesh {dict(exp.mesh.shape)}; workdir {exp.workdir}")

    train_step = step_lib.jit_train_step(
        exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding,
        ema_decay=c.train.get("ema_decay", 0.0), grad_accum=c.train.get("grad_accum", 1))
    last: dict[str, float] = {}
    history: list[dict] = []
    timer, steps_since = writers.Timer(), 0
    step = start
    try:
        with _SignalFlag() as flag:
            while step < c.train.steps:
                batch = to_global(next(data_iter), exp.mesh)
                state, metrics = train_step(state, batch)
                step += 1
                history.append(metrics)
                steps_since += 1
                writer.advance()
                scalars: dict[str, float] = {}
                is_last = step == c.train.steps
                if step % c.train.log_every == 0 or is_last:
                    scalars.update(_mean_metrics(history))
                    history = []
                    scalars["train/steps_per_sec"] = steps_since / max(timer.lap(), 1e-9)
                    steps_since = 0
                    if scalars.get("train/nonfinite", 0.0) > 0:
                        writer.write(step, scalars)
                        good = exp.checkpointer.latest_step()
                        raise TrainingError(
                            f"loss or gradient became non-finite by step {step}; the state was "
                            f"not updated by those steps and was not saved. Last good checkpoint: "
                            f"{good if good is not None else 'none'} in {exp.checkpointer.directory}. "
                            "Lower optimizer.learning_rate or set optimizer.grad_clip.")
                if (c.train.eval_every and step % c.train.eval_every == 0) or is_last:
                    scalars.update(exp.evaluate(state))
                writer.write(step, scalars)
                last.update(scalars)
                want_ckpt = (c.train.checkpoint_every and step % c.train.checkpoint_every == 0) or is_last
                if want_ckpt or flag.signum is not None:
                    evals = {k: v for k, v in scalars.items() if k.startswith("eval/")}
                    exp.checkpointer.save(step, state, data_iter, metrics=evals or None)
                if flag.signum is not None and not is_last:
                    exp.checkpointer.wait()
                    writer.message(f"strata: stopped by signal {flag.signum} at step {step}; "
                                   f"checkpoint saved. Rerun the same command to resume.")
                    raise Preempted(step)
    finally:
        exp.checkpointer.close()
        writer.close()
    writer.message(f"strata: done, step {step}. Results: {exp.workdir}/metrics.jsonl, "
                   f"TensorBoard: {exp.workdir}/tensorboard, checkpoints: {exp.checkpointer.directory}")
    return last
