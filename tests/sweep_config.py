"""A tiny 4-trial sweep (ResNet-8 on digits, a few steps) for tests/test_sweeps.py.

    python run.py sweep --config tests/sweep_config.py --workdir /tmp/sw --parallel 2
    python run.py sweep --config tests/sweep_config.py:fail=true ...   # two trials that fail
    python run.py sweep --config tests/sweep_config.py:two ...         # two trials (learning rates)
    python run.py sweep --config tests/sweep_config.py:same ...        # two trials that train alike
"""
from configs.common import parse_arg, product
from configs.digits_resnet import get_config as digits_config


def get_config(arg: str | None = None):
    args = parse_arg(arg, steps=8, fail=False, two=False, same=False)
    c = digits_config()
    c.model.depth = 8
    c.model.width = 4
    c.train.steps = args.steps
    c.train.batch_size = 16
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.checkpoint_every = 4
    c.train.eval_max_batches = 2
    c.train.progress = False
    c.optimizer.warmup_steps = 0
    return c


def get_sweep(arg: str | None = None):
    args = parse_arg(arg, steps=8, fail=False, two=False, same=False)
    if args.fail:
        return [{"model.depth": 7}, {"model.depth": 9}]  # not 6n+2: the model refuses them
    if args.two:
        return product({"optimizer.learning_rate": [0.05, 0.2]})
    if args.same:  # only the progress bar differs: identical metrics.jsonl and checkpoints
        return product({"train.progress": [False, True]})
    return product({"optimizer.learning_rate": [0.05, 0.2], "model.width": [4, 8]})
