"""ResNet-50 v1.5 on ImageNet-1k, the Flax ImageNet example's recipe
(https://github.com/google/flax/tree/main/examples/imagenet: configs/tpu.py, train.py,
input_pipeline.py): 76.37% top-1 after 125,100 steps (100 epochs) in 4.4 h on a TPU v3-8
(the example's README table; 76.54% in 2.1 h on a v3-32). 25.56M parameters.

    python run.py prepare imagenet2012 --manual_dir ~/imagenet_tars   # see README.md
    python run.py train --config configs/imagenet_resnet50.py --workdir runs/imagenet_resnet50

From the example: batch 1024; SGD with Nesterov momentum 0.9; learning rate
0.1 x batch / 256 = 0.4, 5 epochs (6,255 steps) of linear warm-up from 0, then cosine to
0 at step 125,100; weight decay 1e-4; no label smoothing; bfloat16 compute on TPU
(`half_precision=True` -> `model.dtype="bfloat16"`, parameters stay float32); Inception
crop (area 8-100%, aspect 3/4-4/3, 10 tries, else central) resized to 224 + horizontal
flip; ImageNet mean/std normalisation; v1.5: the stride-2 sits on the 3x3 convolution.

How Strata maps the rest: the example adds `1e-4 / 2 * sum(w**2)` over parameters with
ndim > 1 to the loss; Strata's `sgd` adds `1e-4 * w` to the gradient of the same
parameters before momentum: the identical update. The example evaluates with a central
crop of 224/256 of the shorter side resized (bicubic) to 224; Strata resizes the shorter
side to 256 (bilinear, antialiased) and takes the central 224 (the same field of view).
Strata zero-initialises the last BatchNorm scale of every bottleneck, as the example does.
Eval reports top-1 (`eval/accuracy`) and top-5 (`eval/top5_accuracy`).
`:runlocal` is a 2-step smoke run at 224x224 with batch 8.
"""
from configs.common import base_config, parse_arg

TRAIN_EXAMPLES = 1_281_167
BATCH = 1024
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH  # 1251, as the example computes it
EPOCHS = 100


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.task.name = "classification"
    c.task.num_classes = 1000
    c.task.label_smoothing = 0.0
    c.model.name = "resnet"
    c.model.depth = 50
    c.model.family = "imagenet"
    c.model.num_classes = c.task.get_ref("num_classes")
    c.model.dtype = "bfloat16"

    c.data.name = "imagenet2012"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.preprocess = ("decode|random_resized_crop(224)|flip_lr|normalize|keep('image', 'label')")
    c.data.eval_preprocess = "decode|resize_small(256)|central_crop(224)|normalize|keep('image', 'label')"
    c.data.num_threads = 16
    c.data.in_memory_max_mb = 0

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1 * BATCH / 256
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 5 * STEPS_PER_EPOCH

    c.train.steps = EPOCHS * STEPS_PER_EPOCH  # 125,100
    c.train.batch_size = BATCH
    c.train.log_every = 100
    c.train.eval_every = STEPS_PER_EPOCH
    c.train.checkpoint_every = STEPS_PER_EPOCH
    c.checkpoint.best_metric = "eval/accuracy"

    if args.runlocal:
        c.model.dtype = "float32"  # bfloat16 convolutions are slow on CPUs
        c.data.num_threads = 2
        c.optimizer.warmup_steps = 1
        c.train.steps = 2
        c.train.batch_size = 8
        c.train.log_every = 1
        c.train.eval_every = 2
        c.train.checkpoint_every = 2
        c.train.eval_max_batches = 1
    return c
