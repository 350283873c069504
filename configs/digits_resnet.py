"""ResNet-20 (CIFAR-style) on the embedded UCI digits: Strata's default run.

    python run.py train --config configs/digits_resnet.py --workdir runs/digits_resnet
    make train   # the same, into runs/default

Sized for a 2-core CPU: 600 steps of batch 128 (~53 epochs of 1,437 images) reach
99.4% test accuracy (98.9% before 2026-12-03's im2col path for the 2x2 last stage,
models/conv.py; wall and CPU time: README.md, "What each family reaches").
`:runlocal` is a 60-step smoke run.
"""
from configs.common import digits_resnet_config, parse_arg, product


def get_config(arg: str | None = None):
    return digits_resnet_config(parse_arg(arg, runlocal=False).runlocal)


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
