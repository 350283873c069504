"""Fine-tune a Hugging Face ViT (`ViTForImageClassification`, a `save_pretrained` folder);
sizes, image size and classes come from the folder's config.json.

    python run.py train --config configs/vit_finetune.py:hf=FOLDER --workdir runs/vit_ft \
        --config.data.name=NAME      # a TFDS image dataset prepared with `run.py prepare`
    python run.py export --workdir runs/vit_ft --format hf --out runs/vit_ft/hf

Images are scaled to [-1, 1], as Hugging Face's ViT image processor does (mean = std =
0.5). A checkpoint for 8x8 grey images (image_size 8, num_channels 1) trains on the
embedded UCI digits without setting data.name (the tests do this); `:hf=FOLDER,runlocal`
is a 20-step smoke run. The classifier must have as many labels as the dataset classes.
Without `hf=` the same architecture trains from scratch: ViT-B/16 at 224x224 with 1000
classes, or with `:runlocal` a 2-layer, width-32 ViT on the digits (what
tests/test_evaluators.py runs).
"""
from configs.common import base_config, parse_arg, read_hf_config

GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}
# config.json values without a folder: google/vit-base-patch16-224's sizes, and a tiny one.
VIT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                image_size=224, patch_size=16, num_channels=3, num_labels=1000)
VIT_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                image_size=8, patch_size=2, num_channels=1, num_labels=10)


def get_config(arg: str | None = None):
    args = parse_arg(arg, hf="", runlocal=False)
    hf = read_hf_config(args.hf) if args.hf else (VIT_TINY if args.runlocal else VIT_BASE)
    c = base_config()
    c.task.name = "classification"
    c.task.num_classes = int(hf.get("num_labels") or len(hf.get("id2label") or {}) or 2)
    c.model.name = "vit"
    c.model.variant = f"B/{hf.get('patch_size', 16)}"
    c.model.width = hf.get("hidden_size", 768)
    c.model.depth = hf.get("num_hidden_layers", 12)
    c.model.num_heads = hf.get("num_attention_heads", 12)
    c.model.mlp_dim = hf.get("intermediate_size", 3072)
    c.model.num_classes = c.task.get_ref("num_classes")
    c.model.pool = "cls"
    c.model.posemb = "learn"
    c.model.layer_norm_epsilon = float(hf.get("layer_norm_eps", 1e-12))
    c.model.gelu_approximate = GELU.get(hf.get("hidden_act", "gelu"), False)
    c.model.dtype = "float32"
    c.checkpoint.init_from = "hf:" + args.hf if args.hf else ""

    size = hf.get("image_size", 224)
    if size == 8 and hf.get("num_channels", 3) == 1:
        c.data.name = "digits"
        c.data.preprocess = "to_float(-1, 1)"
    else:
        c.data.name = ""  # set --config.data.name
        c.data.preprocess = f"decode|random_resized_crop({size})|to_float(-1, 1)|flip_lr"
    c.data.eval_preprocess = ("to_float(-1, 1)" if size == 8 else
                              f"decode|resize_small({size})|central_crop({size})|to_float(-1, 1)")

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.05
    c.optimizer.grad_clip = 1.0
    c.train.steps = 1000
    c.train.batch_size = 64
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.checkpoint.best_metric = "eval/accuracy"
    if args.runlocal:
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.log_every = 5
        c.train.eval_max_batches = 2
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 0
    return c
