"""Checks of user input before any compute is spent or any file is touched."""
from __future__ import annotations

import json
import math
import os

import ml_collections

from errors import ConfigError
from train import files


POSITIVE_KEYS = ("train.steps", "train.batch_size", "train.log_every", "train.grad_accum",
                 "checkpoint.keep", "data.num_threads")
NON_NEGATIVE_KEYS = ("train.eval_every", "train.checkpoint_every", "train.eval_batch_size",
                     "train.eval_max_batches", "train.ema_decay", "optimizer.learning_rate",
                     "optimizer.warmup_steps", "optimizer.weight_decay", "optimizer.grad_clip",
                     "optimizer.end_lr_fraction", "optimizer.momentum", "optimizer.eps",
                     "data.in_memory_max_mb", "data.seq_len", "sample.num_tokens", "sample.top_k",
                     "sample.temperature", "sample.steps", "sample.eta", "sample.guidance")
BELOW_ONE_KEYS = ("train.ema_decay", "optimizer.b1", "optimizer.b2")  # decay rates in [0, 1)
# Keys that change nothing about the training numbers, so a resume may change them freely.
RESUME_FREE_KEYS = ("train.progress", "data.num_threads", "data.data_dir", "checkpoint.async_save",
                    "checkpoint.init_from", "checkpoint.init_strict")  # init_*: only for a fresh start
RESUME_FREE_SECTIONS = ("sample.", "attack.", "explain.")  # read only by run.py sample|attack|explain


def _get(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def resolve(config: ml_collections.ConfigDict) -> None:
    """Fills in values whose default is computed (`mesh.rules` () -> the default rules), so
    config.json shows what ran and a resume compares like with like."""
    from train import sharding
    config.mesh.rules = tuple(tuple(r) for r in sharding.rules_from_config(config.mesh.rules))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Values that would fail later (or silently do nothing) are refused now, before any
    compute: NaN or negative numbers, zero where "0 means" has no meaning, empty names."""
    for key in POSITIVE_KEYS + NON_NEGATIVE_KEYS:
        value = _get(config, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config.{key} must be a finite number, got {value}.")
    for key in POSITIVE_KEYS:
        if _get(config, key) <= 0:
            raise ConfigError(f"config.{key} must be positive, got {_get(config, key)}.")
    for key in NON_NEGATIVE_KEYS:
        if _get(config, key) < 0:
            raise ConfigError(f"config.{key} must not be negative, got {_get(config, key)}.")
    for key in BELOW_ONE_KEYS:
        if not 0 <= _get(config, key) < 1:
            raise ConfigError(f"config.{key} must be in [0, 1), got {_get(config, key)}.")
    if not config.model.get("name"):
        raise ConfigError("config.model.name is empty; set it in the config file.")
    if not config.task.get("name"):
        raise ConfigError("config.task.name is empty; set it in the config file.")
    if not config.data.name:
        raise ConfigError("config.data.name is empty; set it (e.g. --config.data.name=digits).")
    ckpt = config.checkpoint
    if ckpt.best_mode not in ("max", "min"):
        raise ConfigError(f"config.checkpoint.best_mode must be 'max' or 'min', got {ckpt.best_mode!r}.")
    if ckpt.best_metric and not ckpt.best_metric.startswith("eval/"):
        raise ConfigError(f"config.checkpoint.best_metric must name an eval metric such as "
                          f"'eval/accuracy', got {ckpt.best_metric!r}.")
    _check_shared_values(config)


def _check_shared_values(config: ml_collections.ConfigDict) -> None:
    """A value two sections need, where a config set both copies instead of one
    FieldReference: they must agree."""
    pairs = [("task.num_classes", "model.num_classes"), ("task.vocab_size", "model.vocab_size")]
    for a, b in pairs:
        try:
            va, vb = _get(config, a), _get(config, b)
        except (KeyError, AttributeError):
            continue
        if va is not None and vb is not None and va != vb:
            raise ConfigError(f"config.{a}={va} but config.{b}={vb}; they must agree "
                              f"(set {a} only: the config file ties {b} to it).")


def check_buildable(config: ml_collections.ConfigDict) -> None:
    """Names (model, task, dataset, evaluators, sampler) and the mesh and batch sizes against
    the devices: checked before the workdir is looked at, so a mistake is reported as itself."""
    from data import sources
    from models import build_model
    from train import sharding
    from train.evaluators import build_evaluators
    from train.tasks import build_task
    model = build_model(**config.model)
    _check_packing(config, model)
    task = build_task(**config.task)
    task.check_sampling(config.sample)
    if config.data.name.split(":")[0].split("/")[0] not in sources.EMBEDDED:
        sources.get_builder(config.data.name, config.data.data_dir or None)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    sharding.check_batch(config.train.batch_size, mesh)
    for evaluator in build_evaluators(config):
        sharding.check_batch(evaluator.batch_size, mesh, what=f"evals.{evaluator.name}.batch_size")


def _check_packing(config: ml_collections.ConfigDict, model) -> None:
    """Packed documents need a model that takes segment ids (GPT does; an RNN does not)."""
    import inspect
    if not config.data.pack_documents or config.data.targets_key:
        return
    if "segmentation" not in inspect.signature(type(model).__call__).parameters:
        raise ConfigError(f"data.pack_documents=True needs a model that takes segment ids (e.g. "
                          f"gpt); model {config.model.name!r} does not, so read windows "
                          "(data.pack_documents=False).")


REMOTE_SCHEMES = ("gs",)  # workdirs run.py may be given as URLs (gs://BUCKET/PATH)


def check_scheme(workdir: str) -> bool:
    """True for a gs:// URL; False for a local path; one line for an unknown scheme."""
    scheme, sep, _ = workdir.partition("://")
    if not sep:
        return False
    if scheme not in REMOTE_SCHEMES:
        raise ConfigError(f"workdir {workdir!r} has unknown scheme {scheme!r}://; use a local path "
                          f"or one of: {', '.join(s + '://' for s in REMOTE_SCHEMES)}.")
    return True


def check_workdir(workdir: str) -> None:
    """The workdir must be a directory we can write (created if missing), or a gs:// URL
    whose bucket exists and answers (nothing is written there yet)."""
    if check_scheme(workdir):
        from train import bucket
        bucket.check_bucket(workdir)
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir {workdir!r} is a file, not a directory; choose another --workdir.")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create workdir {workdir!r}: {e.strerror}; choose another --workdir.") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"workdir {workdir!r} is not writable; choose another --workdir or fix its permissions.")


def has_checkpoints(workdir: str) -> bool:
    return any(d.isdigit() for d in files.listdir(os.path.join(workdir, "checkpoints")))


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict, new: dict) -> list[str]:
    """Keys whose values differ (tuples and lists compare equal), ignoring resume-free keys."""
    a, b = flatten(saved), flatten(new)
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in RESUME_FREE_KEYS and not k.startswith(RESUME_FREE_SECTIONS)
            and norm(a.get(k)) != norm(b.get(k))]


def check_resume_config(workdir: str, config: ml_collections.ConfigDict, allow_change: bool) -> None:
    """Resuming with a different config is refused unless explicitly allowed. A workdir
    without a checkpoint holds nothing to resume, so any config may start there."""
    path = os.path.join(workdir, "config.json")
    if allow_change or not files.exists(path) or not has_checkpoints(workdir):
        return
    saved = json.loads(files.read_text(path))
    new = json.loads(config.to_json_best_effort())
    diff = config_differences(saved, new)
    if diff:
        shown = ", ".join(f"{k} ({flatten(saved).get(k)!r} -> {flatten(new).get(k)!r})" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise ConfigError(f"{workdir} holds a run with a different config: {shown}{more}. "
                          "Use another --workdir, or pass --allow_config_change to resume anyway.")
