"""Defaults shared by every config: each file starts from `base_config()` and sets what
differs. A key exists here because the loop reads it."""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()   # name + the model's own fields
    c.task = ml_collections.ConfigDict()    # name + the task's own fields

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.preprocess = ""         # ops string for training, e.g. "to_float|pad_crop(1)"
    c.data.eval_preprocess = ""    # ops string for evaluation (deterministic)
    c.data.data_dir = ""           # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.files = ""              # comma-separated local text files (text datasets)
    c.data.seq_len = 0             # > 0: read fixed windows of tokens (language modelling)
    c.data.num_threads = 2         # Grain reader threads

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 0
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 128
    c.train.eval_batch_size = 0    # 0 = train.batch_size
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.eval_max_batches = 0   # 0 = the whole eval split
    c.train.ema_decay = 0.0        # > 0 keeps an EMA of the parameters for eval/sampling
    c.train.grad_accum = 1
    c.train.progress = True

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep = 3
    c.checkpoint.best_metric = ""  # e.g. "eval/accuracy": also keep the best checkpoint
    c.checkpoint.best_mode = "max"
    c.checkpoint.async_save = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1               # -1 = all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.rules = ()              # () = train.sharding.DEFAULT_RULES
    return c


def parse_arg(arg: str | None, **defaults):
    """"key=value,key2=value2" -> ConfigDict of `defaults` with those values (typed)."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown config arg {key!r}. Valid: {', '.join(sorted(out))}.")
        kind = type(out[key])
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out
