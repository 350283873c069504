"""The one training loop. It knows tasks and configs, never a model's name.

Resume order (written once, here): a checkpoint in WORKDIR, else `checkpoint.init_from`,
else a fresh start. Per step: `state, metrics = train_step(state, batch)` with the state
donated and no host sync; metrics are fetched only every `train.log_every` steps.

Stopping: SIGTERM/SIGINT finish the current step, save, and exit with EXIT_PREEMPTED (75);
a non-finite loss, gradient norm or state stops the run (exit 2) and is never saved.
Rerunning the same command resumes bit-identically (tests/test_resume.py).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import pipeline, sources, subset
from errors import EXIT_PREEMPTED, ConfigError, TrainingError
from models import build_model, lora_rank
from train import checkpoints, files, manifest, paths, sharding, step as step_lib, trackers, writers
from train.evaluators import EvalContext, build_evaluators
from train.sharding import to_global
from train.optimizers import build_optimizer, trainable_mask
from train.profiler import StepProfiler
from train.state import count_params, count_trainable, plan_train_state
from train.tasks import TaskContext, build_task

EVAL_SAMPLE_SALT = 2**31 - 2  # fold_in(state.rng, .): the key host-side evaluators draw from


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
    return ops.apply(preprocess, [source[0]])


class Experiment:
    """Everything a config describes, built once: mesh, data, model, task, optimizer, state.

    Used by `train` and by `run.py eval|sample`, so all of them build things identically.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, read_only: bool = False):
        self.config = config
        self.workdir = files.absolute(workdir)
        c = config
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
        sharding.check_batch(c.train.batch_size, self.mesh)
        self.rules = sharding.rules_from_config(c.mesh.rules)
        self.model = build_model(**c.model)
        self.task = build_task(**c.task)
        # LoRA: only the adapters (and model.lora_train) train; None = every parameter.
        self.trainable = trainable_mask(tuple(c.model.lora_train)) if lora_rank(self.model) else None
        self.tx = build_optimizer(c.optimizer, c.train.steps, self.trainable)
        self._sources: dict[str, Any] = {}
        self.train_source = subset.subset(self._open(c.data.train_split, c.data.preprocess), c.data)
        self.example = example_batch(self.train_source, c.data.preprocess)
        self.train_in_memory = sources.fits_in_memory(self.data_info, c.data.train_split,
                                                      c.data.in_memory_max_mb)
        self.evaluators = build_evaluators(c)
        for evaluator in self.evaluators:  # every split opens (and fits the mesh) before any compute
            sharding.check_batch(evaluator.batch_size, self.mesh, what=f"evals.{evaluator.name}.batch_size")
            evaluator.check(self.task, self.source)
        self.ema = c.train.ema_decay > 0
        self.init_plan = plan_train_state(self.model, self.task, self.tx, self.example, c.seed, self.ema,
                                          self.mesh, self.rules)
        self.abstract_state, self.state_shardings = self.init_plan.abstract, self.init_plan.shardings
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.checkpointer = checkpoints.Checkpointer(
            os.path.join(self.workdir, "checkpoints"), keep=c.checkpoint.keep,
            best_metric=c.checkpoint.best_metric or None, best_mode=c.checkpoint.best_mode,
            async_save=c.checkpoint.async_save, read_only=read_only)
        self.eval_step = step_lib.jit_eval_step(self.model, self.task, self.state_shardings,
                                                self.batch_sharding)

    def _open(self, split: str, preprocess: str):
        key = (split, preprocess)
        if key not in self._sources:
            self._sources[key], self.data_info = sources.open_split(self.config.data, split, preprocess)
        return self._sources[key]

    def source(self, split: str, preprocess: str):
        """The random-access source of `split` of `config.data` for the ops `preprocess`
        (which decide what stays encoded), opened once per run, for evaluation: only the
        examples of `data.eval_classes` when it is set."""
        key = ("eval", split, preprocess)
        if key not in self._sources:
            self._sources[key] = subset.eval_subset(self._open(split, preprocess), self.config.data)
        return self._sources[key]

    def train_iterator(self):
        c = self.config
        ds = pipeline.train_dataset(
            self.train_source, global_batch_size=c.train.batch_size, preprocess=c.data.preprocess,
            seed=c.seed, process_index=jax.process_index(), process_count=jax.process_count(),
            num_threads=c.data.num_threads, in_memory=self.train_in_memory)
        return iter(ds)

    def abstract_batch(self) -> dict:
        """ShapeDtypeStructs of a global train batch, placed as `to_global` places it (with
        the sharding: a lowering without it traces and numbers functions differently)."""
        return {k: jax.ShapeDtypeStruct((self.config.train.batch_size, *np.shape(v)[1:]),
                                        jax.dtypes.canonicalize_dtype(np.asarray(v).dtype),
                                        sharding=self.batch_sharding)
                for k, v in self.example.items()}

    def fresh_state(self):
        return self.init_plan.create()

    def restore(self, step: int, data_iterator=None) -> tuple[Any, dict]:
        """(state, host values) of checkpoint `step`, placed on the mesh; moves
        `data_iterator` (when given) to the saved position."""
        target = checkpoints.abstract_with_shardings(self.abstract_state, self.state_shardings)
        return self.checkpointer.restore(step, target, data_iterator)

    def evaluate(self, state, step: int | None = None, last: bool = True) -> dict[str, float]:
        """The metrics of every evaluator due after `step` (all of them when `last`), each
        key prefixed as its config says; two evaluators writing one key is a ConfigError."""
        ctx = self.eval_context(state)
        out: dict[str, float] = {}
        for evaluator in self.evaluators:
            if not evaluator.due(step or 0, last):
                continue
            for key, value in evaluator.run(ctx).items():
                name = evaluator.prefix + key
                if name in out:
                    raise ConfigError(f"two evaluators write {name!r}; give config.evals."
                                      f"{evaluator.name}.prefix another value.")
                out[name] = value
        return out

    def eval_context(self, state) -> EvalContext:
        """What evaluators get: the task, the state, the jitted eval step, the sources."""
        return EvalContext(task=self.task, state=state, eval_step=self.eval_step, mesh=self.mesh,
                           source=self.source, train_split=self.config.data.train_split,
                           task_context=self.context(state, jax.random.fold_in(state.rng, EVAL_SAMPLE_SALT)),
                           sample=self.config.sample)

    def context(self, state, rng: jax.Array) -> TaskContext:
        """What host-side task hooks (sampling) get: the model with its eval variables."""
        variables = {"params": state.eval_params(), **state.model_state}
        return TaskContext(self.model, variables, self.data_info, self.mesh, rng, self.workdir)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    """Means over the log window, in float64: a window restored from a checkpoint (JSON
    floats) and one held on the host (float32) give bit-identical means."""
    return {f"train/{k}": float(np.mean(np.asarray([h[k] for h in history], np.float64)))
            for k in history[0]}


def _first_nonfinite(history: list[dict], step: int) -> int | None:
    """The step of the first non-finite entry in a window that ends at `step`."""
    for i, h in enumerate(history):
        if h.get("nonfinite", 0):
            return step - len(history) + 1 + i
    return None


class WorkdirLock:
    """One run per workdir: a second `train` on the same workdir stops with one line.

    Locally an advisory `flock`, released by the OS when the process dies (SIGKILL
    included), so a crashed run never leaves a stale lock; in a bucket a lock object
    (train/bucket.py). Process 0 holds it for multi-process runs.
    """
    BUSY = "another run (pid {pid}) is training in {folder}; wait for it or use another --workdir."

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._release = None

    def __enter__(self):
        if jax.process_index() == 0:
            self._release = paths.hold_lock(self.path, self.BUSY)
        return self

    def __exit__(self, *exc):
        if self._release is not None:
            self._release()


def restore_or_start(exp: Experiment, data_iter, say) -> tuple[Any, int, list[dict], Any]:
    """The resume order: the newest readable checkpoint in the workdir, else
    `checkpoint.init_from`, else a fresh state.

    A checkpoint that cannot be read (a save cut short, a truncated file) is skipped with a
    warning and the previous one is tried; once one is read, the unreadable newer ones are
    moved aside (renamed, never deleted) so new saves can take their step numbers. If none
    can be read, nothing is moved and the run stops: it never silently starts over.
    """
    unreadable: list[tuple[int, str]] = []
    for step in reversed(exp.checkpointer.all_steps()):
        try:
            state, host = exp.restore(step, data_iter)
        except Exception as e:  # a truncated or corrupt save: fall back, keep the files
            why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
            unreadable.append((step, why))
            say(f"strata: warning: checkpoint {step} in {exp.checkpointer.directory} is "
                f"unreadable ({why}); trying the previous one.")
            data_iter = exp.train_iterator()
            continue
        for bad, _ in unreadable:
            where = exp.checkpointer.set_aside(bad)
            say(f"strata: warning: unreadable checkpoint {bad} moved to {where} (kept, not deleted).")
        return state, step, host.get("window", []), data_iter
    if unreadable:
        listed = "; ".join(f"{s}: {why}" for s, why in unreadable)
        raise TrainingError(
            f"no checkpoint in {exp.checkpointer.directory} could be read ({listed}); nothing was "
            "moved or deleted. If the config changed the model, use another --workdir; if the "
            "checkpoints are damaged, move that folder away to start over.")
    init_from = exp.config.checkpoint.init_from
    strict = exp.config.checkpoint.init_strict
    if init_from:  # checked against the shapes before any compute is spent
        from train import init_from as init_lib
        loaded = init_lib.in_layout_of(exp.abstract_state.params, init_lib.load_params(init_from))
        init_lib.check_match(init_lib.match_report(exp.abstract_state.params, loaded), strict)
    state = exp.fresh_state()
    if init_from:
        params, report = init_lib.params_from(init_from, state.params, exp.state_shardings.params,
                                              strict=strict, loaded=loaded)
        ema = jax.tree.map(jnp.copy, params) if state.ema_params is not None else None
        state = state.replace(params=params, ema_params=ema)
        problems = ", ".join(f"{len(v)} {k}" for k, v in report.items() if v and k != "fresh_adapters")
        fresh = report["fresh_adapters"]
        say(f"strata: parameters from {init_from} ({problems or 'all matched'})"
            + (f"; {len(fresh)} LoRA adapter parameters start fresh" if fresh else ""))
        for kind, names in report.items():
            for name in names if kind != "fresh_adapters" else ():
                say(f"strata:   {kind}: {name}")
    return state, 0, [], data_iter


def _preemption_requested(flag: _SignalFlag, step: int, sync: bool = True) -> bool:
    """Whether to stop after `step`. One process: a SIGTERM/SIGINT was caught. Several:
    JAX's preemption sync point (every process stops at the same step), or, where that
    service is not running, the processes' signal flags compared at `sync` steps (the ones
    that already wait for the device), so all of them agree and save together."""
    if jax.process_count() == 1:
        return flag.signum is not None
    from jax.experimental import multihost_utils
    try:
        if multihost_utils.reached_preemption_sync_point(step):
            return True
    except Exception:  # the preemption service is not running (e.g. local processes)
        pass
    if not sync:
        return False
    flags = multihost_utils.process_allgather(np.asarray(flag.signum is not None, np.int32))
    return bool(np.any(flags))


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the last
    metrics written. Raises `Preempted` after a signal, once the checkpoint is safe."""
    files.makedirs(workdir)
    # Signals are caught from here on (before the lock names this process): one that lands
    # during start-up stops the run before its first step, with the same exit code.
    with _SignalFlag() as flag, WorkdirLock(workdir):
        return _train_locked(config, workdir, flag)


def _stop_if_signalled(flag: _SignalFlag, say, start: int | None = None) -> None:
    """A signal during start-up: stop before the first step; the checkpoints stay as they are."""
    if _preemption_requested(flag, start or 0):
        where = f" (before step {start + 1})" if start is not None else ""
        say(f"strata: stopped by signal during start-up{where}; nothing new to save. "
            "Rerun the same command to resume.")
        raise Preempted(start or 0)


def _divergence(step: int, first_bad: int | None, exp: Experiment, what: str) -> TrainingError:
    good = exp.checkpointer.latest_step()
    return TrainingError(
        f"{what} became non-finite at step {first_bad or step}; the run stopped at step {step} "
        f"and no checkpoint was saved after it. Last good checkpoint: "
        f"{'step %d' % good if good is not None else 'none'} in {exp.checkpointer.directory}. "
        "Lower optimizer.learning_rate or set optimizer.grad_clip, then rerun with "
        "--allow_config_change to resume from that checkpoint.")


def _train_locked(config: ml_collections.ConfigDict, workdir: str, flag: _SignalFlag) -> dict[str, float]:
    c = config
    trackers.check_trackers(c.train.trackers)  # a missing package stops before any compute
    profiler = StepProfiler(c.train.profile_steps, c.train.steps, workdir)
    exp = Experiment(c, workdir)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if jax.process_index() == 0 else (lambda m: None)
    train_step = step_lib.jit_train_step(
        exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding,
        ema_decay=c.train.ema_decay, grad_accum=c.train.grad_accum, trainable=exp.trainable)
    latest = exp.checkpointer.latest_step()
    compiling = (step_lib.compile_in_background(  # not when the workdir's run is already complete
        train_step, checkpoints.abstract_with_shardings(exp.abstract_state, exp.state_shardings),
        exp.abstract_batch()) if latest is None or latest < c.train.steps else step_lib.NOT_COMPILING)
    try:
        _stop_if_signalled(flag, say)
        state, start, history, data_iter = restore_or_start(exp, exp.train_iterator(), say)
        if start < c.train.steps:
            _stop_if_signalled(flag, say, start)
    except BaseException:
        compiling.join()
        exp.checkpointer.close()
        raise
    # Written after the restore (which may refuse the workdir) and before the first step.
    if jax.process_index() == 0:
        paths.write_json(os.path.join(exp.workdir, "config.json"), manifest.config_to_dict(c))
        paths.write_json(os.path.join(exp.workdir, "manifest.json"), manifest.build_manifest(c, exp.mesh))
    writer = writers.MetricWriter(exp.workdir, c.train.steps, start, progress=c.train.progress,
                                  trackers=c.train.trackers)
    trained = "" if exp.trainable is None else f" ({count_trainable(state.params, exp.trainable):,} train: LoRA)"
    writer.message(f"strata: {'resumed from step %d' % start if start else 'fresh start'}; "
                   f"{count_params(state.params):,} parameters{trained}; mesh {dict(exp.mesh.shape)}; "
                   f"workdir {exp.workdir}")

    last: dict[str, float] = {}
    pending: list[dict] = []  # device metrics since the last log; fetched only when logging
    timer, steps_since, step = writers.Timer(), 0, start
    try:
        while step < c.train.steps:
            batch = to_global(next(data_iter), exp.mesh)
            profiler.before(step + 1)
            state, metrics = train_step(state, batch)
            step += 1
            if step == start + 1:
                # Compile the checkpoint checksums and finite check in the first window, which
                # holds the train step's compilation anyway: not before the first step, and
                # not as a stall in the window of the first save.
                checkpoints.digest_and_finite(state)
            profiler.after(step, state)
            pending.append(metrics)
            steps_since += 1
            writer.advance()
            scalars: dict[str, float] = {}
            is_last = step == c.train.steps
            logged = step % c.train.log_every == 0 or is_last
            if logged:
                history += jax.device_get(pending)
                pending = []
                scalars.update(_mean_metrics(history))
                first_bad = _first_nonfinite(history, step)
                history = []
                seconds, cpu_seconds = timer.lap()
                writer.perf(step, {"perf/steps_per_sec": steps_since / max(seconds, 1e-9),
                                   "perf/seconds": seconds, "perf/cpu_seconds": cpu_seconds})
                steps_since = 0
                if first_bad is not None:
                    writer.write(step, scalars)
                    raise _divergence(step, first_bad, exp, "the loss or gradient norm")
            scalars.update(exp.evaluate(state, step, last=is_last))
            writer.write(step, scalars)
            last.update(scalars)
            want_ckpt = (c.train.checkpoint_every and step % c.train.checkpoint_every == 0) or is_last
            preempt = _preemption_requested(flag, step, sync=bool(want_ckpt or logged))
            if want_ckpt or preempt:
                # The partial log window travels with the checkpoint, so a resumed run
                # logs the same means as an uninterrupted one.
                history += jax.device_get(pending)
                pending = []
                # Never save a non-finite state: stop here instead.
                first_bad = _first_nonfinite(history, step)
                if first_bad is not None:
                    raise _divergence(step, first_bad, exp, "the loss or gradient norm")
                if not checkpoints.all_finite(state):
                    raise _divergence(step, None, exp, "the train state (parameters or optimizer state)")
                digest = checkpoints.start_digest(state)  # resolved in the background save
                evals = {k: v for k, v in scalars.items() if k.startswith("eval/")}
                window = [{k: float(v) for k, v in h.items()} for h in history]
                exp.checkpointer.save(step, state, data_iter, metrics=evals or None,
                                      host={"window": window}, digest=digest)
            if preempt and not is_last:
                exp.checkpointer.wait()
                writer.message(f"strata: stopped by signal at step {step}; checkpoint saved. "
                               "Rerun the same command to resume.")
                raise Preempted(step)
    finally:
        compiling.join()
        profiler.close()
        exp.checkpointer.close()
        writer.close()
    writer.message(f"strata: done, step {step}. Results: {exp.workdir}/metrics.jsonl, "
                   f"TensorBoard: {exp.workdir}/tensorboard, checkpoints: {exp.checkpointer.directory}")
    return last
