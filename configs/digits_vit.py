"""A small ViT (patch 2, 16 tokens + class token) on the embedded UCI digits.

    python run.py train --config configs/digits_vit.py --workdir runs/digits_vit

Sized for a 2-core CPU: 98.1% test accuracy after 1,500 steps (96.1% at 1,000) (wall
and CPU time: README.md, "What each family reaches").
`:runlocal` is a short smoke run.
"""
from configs.common import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.task.num_classes = 10
    c.model.name = "vit"
    c.model.variant = "Ti/2"
    c.model.width = 128
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.num_classes = c.task.get_ref("num_classes")  # set once, in task.num_classes
    c.model.pool = "gap"
    c.model.dtype = "float32"

    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    c.data.name = "digits"
    c.data.preprocess = "to_float(-1, 1)|pad_crop(1)"
    c.data.eval_preprocess = "to_float(-1, 1)"

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip = 1.0

    c.train.steps = 1500
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.checkpoint.best_metric = "eval/accuracy"

    if args.runlocal:
        c.train.steps = 40
        c.train.eval_every = 20
        c.train.checkpoint_every = 20
        c.train.log_every = 10
    return c
