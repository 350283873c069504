"""The one training loop. It knows tasks and configs, never a model's name.

Resume order (written once, here): a checkpoint in WORKDIR, else `checkpoint.init_from`,
else a fresh start. Per step: `state, metrics = train_step(state, batch)` with the state
donated and no host sync; metrics are fetched only every `train.log_every` steps.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
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

    def restore(self, step: int, data_iterator=None) -> tuple[Any, dict]:
        """(state, host values) of checkpoint `step`, placed on the mesh; moves
        `data_iterator` (when given) to the saved position."""
        target = checkpoints.abstract_with_shardings(self.abstract_state, self.state_shardings)
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
    return {f"train/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}


class WorkdirLock:
    """One run per workdir: a second `train` on the same workdir stops with one line.

    An advisory `flock`, released by the OS when the process dies (SIGKILL included), so a
    crashed run never leaves a stale lock. Process 0 holds it for multi-process runs.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._fd = None

    def __enter__(self):
        import fcntl
        if jax.process_index() != 0:
            return self
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            from train.checks import ConfigError
            raise ConfigError(f"another run (pid {holder}) is training in {os.path.dirname(self.path)}; "
                              "wait for it or use another --workdir.") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock


def restore_or_start(exp: Experiment, data_iter, say) -> tuple[Any, int, list[dict], Any]:
    """The resume order: the newest readable checkpoint in the workdir, else
    `checkpoint.init_from`, else a fresh state. Unreadable checkpoints are set aside
    (renamed, never deleted) with a warning, and the previous one is tried."""
    for step in reversed(exp.checkpointer.all_steps()):
        try:
            state, host = exp.restore(step, data_iter)
        except Exception as e:  # a truncated or corrupt save: fall back, keep the files
            where = exp.checkpointer.set_aside(step)
            say(f"strata: warning: checkpoint {step} is unreadable ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]}); moved to {where}, trying the previous one.")
            data_iter = exp.train_iterator()
            continue
        return state, step, host.get("window", []), data_iter
    state = exp.fresh_state()
    init_from = exp.config.checkpoint.get("init_from", "")
    if init_from:
        from train.init_from import params_from
        params, report = params_from(init_from, state.params, exp.state_shardings.params,
                                     strict=exp.config.checkpoint.get("init_strict", True))
        state = state.replace(params=params, ema_params=params if state.ema_params is not None else None)
        problems = ", ".join(f"{len(v)} {k}" for k, v in report.items() if v) or "all matched"
        say(f"strata: parameters from {init_from} ({problems})")
        for kind, names in report.items():
            for name in names:
                say(f"strata:   {kind}: {name}")
    return state, 0, [], data_iter


def _preemption_requested(flag: _SignalFlag, step: int) -> bool:
    """SIGTERM/SIGINT here, or (multi-host) JAX's preemption notice reaching any process;
    every process agrees on the same step."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        try:
            if multihost_utils.reached_preemption_sync_point(step):
                return True
        except Exception:  # the preemption service is not running (e.g. local processes)
            pass
    return flag.signum is not None


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the last
    metrics written. Raises `Preempted` after a signal, once the checkpoint is safe."""
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    c = config
    exp = Experiment(c, workdir)
    if jax.process_index() == 0:
        manifest.write_json(os.path.join(exp.workdir, "config.json"), manifest.config_to_dict(c))
        manifest.write_json(os.path.join(exp.workdir, "manifest.json"), manifest.build_manifest(c, exp.mesh))
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if jax.process_index() == 0 else (lambda m: None)
    state, start, history, data_iter = restore_or_start(exp, exp.train_iterator(), say)
    writer = writers.MetricWriter(exp.workdir, c.train.steps, start, progress=c.train.get("progress", True))
    writer.message(f"strata: {'resumed from step %d' % start if start else 'fresh start'}; "
                   f"{count_params(state.params):,} parameters; mesh {dict(exp.mesh.shape)}; "
                   f"workdir {exp.workdir}")

    train_step = step_lib.jit_train_step(
        exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding,
        ema_decay=c.train.get("ema_decay", 0.0), grad_accum=c.train.get("grad_accum", 1))
    last: dict[str, float] = {}
    pending: list[dict] = []  # device metrics since the last log; fetched only when logging
    timer, steps_since, step = writers.Timer(), 0, start
    try:
        with _SignalFlag() as flag:
            while step < c.train.steps:
                batch = to_global(next(data_iter), exp.mesh)
                state, metrics = train_step(state, batch)
                step += 1
                pending.append(metrics)
                steps_since += 1
                writer.advance()
                scalars: dict[str, float] = {}
                is_last = step == c.train.steps
                if step % c.train.log_every == 0 or is_last:
                    history += jax.device_get(pending)
                    pending = []
                    scalars.update(_mean_metrics(history))
                    history = []
                    writer.perf(step, {"perf/steps_per_sec": steps_since / max(timer.lap(), 1e-9)})
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
                preempt = _preemption_requested(flag, step)
                want_ckpt = (c.train.checkpoint_every and step % c.train.checkpoint_every == 0) or is_last
                if want_ckpt or preempt:
                    # The partial log window travels with the checkpoint, so a resumed run
                    # logs the same means as an uninterrupted one.
                    history += jax.device_get(pending)
                    pending = []
                    # Never save a state that went non-finite; the next log stops the run.
                    if not any(h.get("nonfinite", 0) for h in history):
                        evals = {k: v for k, v in scalars.items() if k.startswith("eval/")}
                        window = [{k: float(v) for k, v in h.items()} for h in history]
                        exp.checkpointer.save(step, state, data_iter, metrics=evals or None,
                                              host={"window": window})
                if preempt and not is_last:
                    exp.checkpointer.wait()
                    writer.message(f"strata: stopped by signal at step {step}; checkpoint saved. "
                                   "Rerun the same command to resume.")
                    raise Preempted(step)
    finally:
        exp.checkpointer.close()
        writer.close()
    writer.message(f"strata: done, step {step}. Results: {exp.workdir}/metrics.jsonl, "
                   f"TensorBoard: {exp.workdir}/tensorboard, checkpoints: {exp.checkpointer.directory}")
    return last
