"""Data efficiency on digits: the CNN, the ViT and the RNN trained on the first N training
examples (N = 50 ... all 1,437), the same N examples for every family and seed.

    python run.py sweep --config configs/digits_data_efficiency.py --workdir runs/de --seeds 2 --parallel 2
    python run.py report runs/de     # runs/de/plots/by_train_examples_*.png: accuracy against N

One sweep trains three models: each trial's `config` key is this file's argument
(`family=cnn|vit|rnn`). The recipes are those of configs/digits_resnet.py, digits_vit.py
and digits_rnn.py (copied: a config imports only configs/common) with fewer steps, so the
36 runs of two seeds fit a shared 2-core machine: steps are per run whatever N is (a small
N sees more epochs; batch min(N, 128)), evaluation on the whole test split at the end.
"""
from configs.common import base_config, parse_arg, product, zip_axes

STEPS = {"cnn": 300, "vit": 400, "rnn": 300}   # full recipes: 600, 1500, 1000
SIZES = [50, 100, 200, 400, 800, 1437]         # 1437: the whole digits train split


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
    args = parse_arg(arg, family="cnn")
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
    return c


def get_sweep(arg: str | None = None):
    """3 families x 6 sizes (x `--seeds K`); N outermost, so a cut sweep has every family.
    Below 128 examples the batch is the whole subset (the pipeline needs N >= one batch)."""
    sizes = zip_axes({"data.train_examples": SIZES, "train.batch_size": [min(n, 128) for n in SIZES]})
    return product(sizes, {"config": ["family=cnn", "family=vit", "family=rnn"]})
