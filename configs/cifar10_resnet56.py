"""ResNet-56 on CIFAR-10, He et al. 2016 ("Deep Residual Learning for Image Recognition",
https://arxiv.org/abs/1512.03385, sec. 4.2 and Table 6): 6.97% test error, 0.85M params.

    python run.py prepare cifar10                     # one 162 MiB archive
    python run.py train --config configs/cifar10_resnet56.py --workdir runs/cifar10_resnet56

Source hardware and time: "a mini-batch size of 128 on two GPUs"; the paper states no
training time. Every value below is the paper's (sec. 4.2): batch 128; SGD, momentum 0.9,
weight decay 1e-4; learning rate 0.1, divided by 10 at 32k and 48k iterations, stop at
64k (~164 epochs of 50k images); 4-pixel padding + random 32x32 crop + horizontal flip;
the single original view at test time; option-A shortcuts (identity, subsampled and
zero-padded: `model.shortcut="pad"`, no extra parameters) and He initialisation.

Where Strata differs (deliberately small): the paper subtracts the per-pixel mean,
Strata standardises per channel (CIFAR-10's mean/std); the paper's L2 decay covers every
weight, Strata's (added to the gradient before momentum, i.e. the same L2 form) covers
matrices and kernels only (ndim > 1: not BatchNorm scales/biases); the last BatchNorm
scale of each residual branch starts at zero (Goyal et al. 2017; the paper uses one).
The paper's 64k-iteration budget was chosen on a 45k/5k split; this trains on all 50k.
`:runlocal` is a 20-step smoke run of the same network on CIFAR-10 (batch 16).
"""
from configs.common import base_config, parse_arg

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, of images in [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.task.name = "classification"
    c.task.num_classes = 10
    c.task.label_smoothing = 0.0
    c.model.name = "resnet"
    c.model.depth = 56
    c.model.family = "cifar"
    c.model.shortcut = "pad"
    c.model.num_classes = c.task.get_ref("num_classes")
    c.model.dtype = "float32"

    c.data.name = "cifar10"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    norm = f"normalize({CIFAR10_MEAN}, {CIFAR10_STD})"
    # Normalised first, so the 4 padded pixels are 0 = the mean colour, as in the paper.
    c.data.preprocess = f"{norm}|pad_crop(4)|flip_lr|keep('image', 'label')"
    c.data.eval_preprocess = f"{norm}|keep('image', 'label')"

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "piecewise"
    c.optimizer.boundaries = (32_000, 48_000)
    c.optimizer.decay_factor = 0.1
    c.optimizer.warmup_steps = 0

    c.train.steps = 64_000
    c.train.batch_size = 128
    c.train.log_every = 200
    c.train.eval_every = 4_000
    c.train.checkpoint_every = 4_000
    c.train.eval_batch_size = 500
    c.checkpoint.best_metric = "eval/accuracy"

    if args.runlocal:
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_batch_size = 64
        c.optimizer.boundaries = (10, 15)
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_max_batches = 2
    return c
