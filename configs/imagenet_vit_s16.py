"""ViT-S/16 on ImageNet-1k, big_vision's "plain ViT baseline" (Beyer, Zhai & Kolesnikov
2022, "Better plain ViT baselines for ImageNet-1k", https://arxiv.org/abs/2205.01580;
big_vision/configs/vit_s16_i1k.py): 76.5% top-1 after 90 epochs, "6-7h ... on a
TPU-v3-8" (the config's docstring); 80.0% after 300 epochs (the paper). 22.1M parameters
(22.05M is the count with a class token and learned positions, as in timm; this head
has neither, plus big_vision's 384-wide pre-logits layer).

    python run.py prepare imagenet2012 --manual_dir ~/imagenet_tars   # see README.md
    python run.py train --config configs/imagenet_vit_s16.py --workdir runs/imagenet_vit_s16
    python run.py train --config configs/imagenet_vit_s16.py:epochs=300 --workdir runs/vit_s16_300ep
    python run.py train --config configs/imagenet_vit_s16.py:variant=B/16 --workdir runs/vit_b16

From big_vision's config: train on train[:99%] (minival = train[99%:]), batch 1024, 90
epochs; Inception crop to 224 (area 5-100%, big_vision's `inception_crop` default),
flip, RandAugment(2, 10), values in [-1, 1], mixup with Beta(0.2, 0.2); model
`variant="S/16", rep_size=True, pool_type="gap", posemb="sincos2d"`; Adam (b1 0.9, b2
0.999) with gradients clipped to norm 1; lr 0.001, 10k linear warm-up steps, cosine to 0;
decoupled weight decay `wd=0.0001` on kernels; eval: resize 256, central crop 224.

How Strata maps it: big_vision's update is -sched(t) * (lr * adam + wd * w), its decay
not multiplied by lr; optax's adamw multiplies decay by the full schedule lr * sched(t),
so `optimizer.weight_decay = wd / lr = 0.1` gives the same update. big_vision decays
".*/kernel$"; Strata decays every parameter with ndim > 1, which here also includes the
(heads, head_dim) biases of query/key/value (0.03% of the weights). big_vision keeps
Adam's first moment in bfloat16 (`mu_dtype`); Strata keeps it in float32. big_vision
flips before RandAugment; Strata's flip is a batched op, so after it (the same
distribution: RandAugment's geometric ops draw a random sign). Mixup partners are
neighbouring rows (data/mix_ops.py) instead of the batch rolled by one.
`:runlocal` is a 2-step smoke run at 224x224 with batch 8.
"""
from configs.common import base_config, evaluator, parse_arg

TRAIN_EXAMPLES = 1_268_355  # train[:99%] of 1,281,167
BATCH = 1024
WIDTHS = {"Ti": 192, "S": 384, "B": 768, "L": 1024, "H": 1280}  # models/vit.py VARIANTS


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False, variant="S/16", epochs=90)
    c = base_config()
    c.task.name = "classification"
    c.task.num_classes = 1000
    c.task.label_smoothing = 0.0
    c.model.name = "vit"
    c.model.variant = args.variant
    c.model.pool = "gap"
    c.model.posemb = "sincos2d"
    # big_vision's rep_size=True: a pre-logits layer as wide as the model (an unknown size
    # gets 0 here, and the model's own one-line error for the variant).
    c.model.rep_size = WIDTHS.get(args.variant.split("/")[0], 0)
    c.model.num_classes = c.task.get_ref("num_classes")
    c.model.dtype = "bfloat16"

    c.data.name = "imagenet2012"
    c.data.train_split = "train[:99%]"
    c.data.eval_split = "validation"
    c.data.preprocess = ("decode|random_resized_crop(224, scale=(0.05, 1.0))|randaugment(2, 10)|"
                         "flip_lr|to_float(-1, 1)|mixup(0.2, 1000)|keep('image', 'label')")
    c.data.eval_preprocess = "decode|resize_small(256)|central_crop(224)|to_float(-1, 1)|keep('image', 'label')"
    c.data.num_threads = 16
    c.data.in_memory_max_mb = 0

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 0.001
    c.optimizer.weight_decay = 0.0001 / 0.001  # big_vision's wd=1e-4, not scaled by lr
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.grad_clip = 1.0
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 10_000

    c.train.steps = round(args.epochs * TRAIN_EXAMPLES / BATCH)  # 111,477 for 90 epochs
    c.train.batch_size = BATCH
    c.train.log_every = 50
    c.train.eval_every = 2_500
    c.train.checkpoint_every = 1_000
    c.checkpoint.best_metric = "eval/accuracy"
    c.evals.minival = evaluator("metrics", split="train[99%:]")

    if args.runlocal:
        c.model.dtype = "float32"  # bfloat16 matmuls are slow on CPUs
        c.data.num_threads = 2
        c.optimizer.warmup_steps = 1
        c.train.steps = 2
        c.train.batch_size = 8
        c.train.log_every = 1
        c.train.eval_every = 2
        c.train.checkpoint_every = 2
        c.train.eval_max_batches = 1
    return c
