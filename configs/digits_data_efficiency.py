"""Data efficiency on digits: the CNN, the ViT and the RNN trained on the first N training
examples (N = 50 ... all 1,437), the same N examples for every family and seed.

    python run.py sweep --config configs/digits_data_efficiency.py --workdir runs/de --seeds 2 --parallel 2
    python run.py report runs/de     # runs/de/plots/by_train_examples_*.png: accuracy against N

Transfer (`stage=pretrain|finetune`): pretrain on digits 0-4 (a 5-way head, evaluated on
test digits 0-4), then fine-tune on N per class of digits 5-9 from that checkpoint or
from scratch, evaluated on test digits 5-9 only (`data.eval_classes`). The fine-tuned
model has the usual 10-way head with the labels as they are: the pretrained 5-way head
does not fit it, so `init_strict=False` loads everything else and the head starts fresh.

    python run.py train --config configs/digits_data_efficiency.py:stage=pretrain --workdir runs/pre
    python run.py sweep --config configs/digits_data_efficiency.py:pretrained=runs/pre --workdir runs/tr --seeds 2
    python run.py report runs/tr

One sweep trains three models: each trial's `config` key is this file's argument
(`family=cnn|vit|rnn`). The recipes are those of configs/digits_resnet.py, digits_vit.py
and digits_rnn.py (copied: a config imports only configs/common) with fewer steps, so the
36 runs of two seeds fit a shared 2-core machine: steps are per run whatever N is (a small
N sees more epochs; batch min(N, 128)), evaluation on the whole test split at the end.
`:runlocal` is a 20-step smoke run.
"""
from configs.common import base_config, parse_arg, product, zip_axes

STEPS = {"cnn": 300, "vit": 400, "rnn": 300}   # full recipes: 600, 1500, 1000
SIZES = [50, 100, 200, 400, 800, 1437]         # 1437: the whole digits train split
OLD, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)    # transfer: pretrain on OLD, fine-tune on NEW
SHOTS = [5, 20]                                # transfer: examples per class of NEW
FINETUNE_STEPS = 200


def _model(c, family: str) -> None:
    """The model, its optimizer and its preprocessing: the family's own recipe."""
    aug = "to_float(-1, 1)|pad_crop(1)"
    c.data.preprocess, c.data.eval_preprocess = aug, "to_float(-1, 1)"
    c.optimizer.name, c.optimizer.grad_clip = "adamw", 1.0
    if family == "cnn":
        c.model.update(name="resnet", depth=20, family="cifar", width=16)
        c.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, warmup_steps=50, grad_clip=0.0)
    elif family == "vit":
        c.model.update(name="vit", variant="Ti/2", width=128, depth=4, num_heads=4,
                       mlp_dim=256, pool="gap")
        c.task.label_smoothing = 0.1
        c.optimizer.update(learning_rate=2e-3, weight_decay=0.05, warmup_steps=100)
    elif family == "rnn":
        c.model.update(name="rnn", cell="lstm", num_layers=2, hidden=128)
        c.data.preprocess, c.data.eval_preprocess = aug + "|rows_as_sequence", "to_float(-1, 1)|rows_as_sequence"
        c.optimizer.update(learning_rate=3e-3, weight_decay=1e-4, warmup_steps=50)
    else:
        raise ValueError(f"family must be cnn, vit or rnn, got {family!r}.")


def get_config(arg: str | None = None):
    args = parse_arg(arg, family="cnn", stage="", pretrained="", runlocal=False)  # pretrained: get_sweep's
    c = base_config()
    c.task.name = "classification"
    c.task.num_classes = 10
    c.task.label_smoothing = 0.0
    c.model.num_classes = c.task.get_ref("num_classes")
    c.model.dtype = "float32"
    c.data.name = "digits"
    _model(c, args.family)
    c.train.steps = STEPS[args.family]
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.eval_every = 0          # only at the end
    c.train.checkpoint_every = 0
    c.train.progress = False
    c.checkpoint.best_metric = "eval/accuracy"
    if args.stage == "pretrain":  # digits 0-4, a 5-way head
        c.task.num_classes = 5
        c.data.train_classes = c.data.eval_classes = OLD
    elif args.stage == "finetune":  # N per class of digits 5-9, a fresh 10-way head
        c.data.train_classes = c.data.eval_classes = NEW
        c.data.class_balanced = True
        c.checkpoint.init_strict = False  # the 5-way head does not fit: it starts fresh
        c.train.steps = FINETUNE_STEPS
    elif args.stage:
        raise ValueError(f"stage must be pretrain or finetune, got {args.stage!r}.")
    if args.runlocal:  # a smoke run
        c.train.steps = 20
    return c


def get_sweep(arg: str | None = None):
    """`:pretrained=DIR`: the transfer sweep, fine-tuned from DIR or from scratch; else
    3 families x 6 sizes (x `--seeds K`); N outermost, so a cut sweep has every family.
    Below 128 examples the batch is the whole subset (the pipeline needs N >= one batch)."""
    args = parse_arg(arg, pretrained="")
    if args.pretrained:
        shots = zip_axes({"data.train_examples": [5 * k for k in SHOTS],
                          "train.batch_size": [min(5 * k, 128) for k in SHOTS]})
        return product({"config": ["stage=finetune"], "checkpoint.init_from": [args.pretrained, ""]}, shots)
    sizes = zip_axes({"data.train_examples": SIZES, "train.batch_size": [min(n, 128) for n in SIZES]})
    return product(sizes, {"config": ["family=cnn", "family=vit", "family=rnn"]})
