"""ResNet-20 (CIFAR-style) on the embedded UCI digits: Strata's default run.

    python run.py train --config configs/digits_resnet.py --workdir runs/digits_resnet
    make train   # the same, into runs/default

Sized for a 2-core CPU: 600 steps of batch 128 (~53 epochs of 1,437 images) reach
98.9% test accuracy (wall and CPU time: README.md, "What each family reaches").
`:runlocal` is a 60-step smoke run.
"""
from configs.common import base_config, parse_arg, product


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.task.num_classes = 10
    c.model.name = "resnet"
    c.model.depth = 20
    c.model.family = "cifar"
    c.model.width = 16            # channels of the first stage (16-32-64)
    c.model.num_classes = c.task.get_ref("num_classes")  # set once, in task.num_classes
    c.model.dtype = "float32"

    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.data.name = "digits"
    c.data.preprocess = "to_float(-1, 1)|pad_crop(1)"
    c.data.eval_preprocess = "to_float(-1, 1)"

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 50

    c.train.steps = 600
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.checkpoint.best_metric = "eval/accuracy"

    if args.runlocal:
        c.train.steps = 60
        c.train.eval_every = 30
        c.train.checkpoint_every = 30
        c.train.log_every = 10
    return c


def get_sweep(arg: str | None = None):
    """Learning rate x depth: 4 trials of 200 steps, logged every 10, evaluated every 50.

        python run.py sweep --config configs/digits_resnet.py --workdir runs/sw --parallel 2
        python run.py report runs/sw     # runs/sw/report.md, report.csv, plots/*.png

    `:runlocal` sweeps the 60-step smoke run instead.
    """
    args = parse_arg(arg, runlocal=False)
    fixed = {} if args.runlocal else {"train.steps": [200], "train.log_every": [10],
                                          "train.eval_every": [50]}
    return product({"optimizer.learning_rate": [0.05, 0.2], "model.depth": [8, 20]}, fixed)
