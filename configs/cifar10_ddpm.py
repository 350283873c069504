"""Unconditional DDPM on CIFAR-10, Ho, Jain & Abbeel 2020 ("Denoising Diffusion
Probabilistic Models", https://arxiv.org/abs/2006.11239, sec. 4 and appendix B): FID 3.17
(IS 9.46) on 50k samples, with the 35.7M-parameter U-Net; the paper's TPU v3-8 trains
"at 21 steps per second at batch size 128 (10.6 hours to train to completion at 800k
steps)".

    python run.py prepare cifar10
    python run.py train  --config configs/cifar10_ddpm.py --workdir runs/cifar10_ddpm
    python run.py sample --workdir runs/cifar10_ddpm [--config.sample.sampler=ddpm]
    # FID against the test split, given Inception features (see README.md, "FID"):
    python run.py train --config configs/cifar10_ddpm.py:fid=inception.npz --workdir ...

From the paper: U-Net with 128 base channels, multipliers (1, 2, 2, 2), 2 residual
blocks per resolution, self-attention at 16x16, dropout 0.1, GroupNorm; T = 1000, betas
linear from 1e-4 to 0.02, the simple noise-prediction loss; Adam at 2e-4 (5,000 steps of
linear warm-up, gradients clipped to norm 1, both from the released code), batch 128,
800k steps, EMA 0.9999; random horizontal flips; images scaled to [-1, 1]. Sampling:
DDPM ancestral (1,000 steps, `sample.sampler="ddpm"`, the paper's FID) or DDIM (Song et
al. 2021; 50 steps here, its faster alternative).

FID needs pytorch-fid's Inception weights, which the user downloads and converts
(`python -m train.evaluators.inception_weights IN.pth inception.npz`, README "FID"), then
`:fid=inception.npz` adds the `fid` evaluator at 299x299; without it the run reports the
eval loss only. `:runlocal` is a 2-step smoke run of a small U-Net.
"""
from configs.common import base_config, evaluator, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False, fid="", fid_samples=50_000)
    c = base_config()
    c.task.name = "diffusion"
    c.task.num_classes = 0           # unconditional
    c.task.num_steps = 1000
    c.task.schedule = "linear"
    c.task.cond_drop = 0.0
    c.model.name = "unet"
    c.model.channels = 128
    c.model.channel_mults = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)
    c.model.dropout = 0.1
    c.model.num_groups = 32
    c.model.dtype = "float32"

    c.data.name = "cifar10"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.preprocess = "flip_lr|to_float(-1, 1)|keep('image', 'label')"
    c.data.eval_preprocess = "to_float(-1, 1)|keep('image', 'label')"

    c.sample.sampler = "ddim"
    c.sample.steps = 50
    c.sample.eta = 0.0
    c.sample.per_class = 10

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 5000
    c.optimizer.grad_clip = 1.0

    c.train.steps = 800_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9999
    c.train.log_every = 1000
    c.train.eval_every = 50_000
    c.train.checkpoint_every = 10_000
    c.train.eval_max_batches = 10
    if args.fid:
        # image_size: samples and real images resized to InceptionV3's 299 (as pytorch-fid).
        c.evals.fid = evaluator("fid", weights=args.fid, num_samples=args.fid_samples,
                                every=100_000, batch_size=500, image_size=299)

    if args.runlocal:
        c.model.channels = 32
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = (16,)
        c.model.num_groups = 8
        c.task.num_steps = 100
        c.sample.steps = 5
        c.optimizer.warmup_steps = 1
        c.train.steps = 2
        c.train.batch_size = 8
        c.train.ema_decay = 0.9
        c.train.log_every = 1
        c.train.eval_every = 2
        c.train.checkpoint_every = 2
        c.train.eval_max_batches = 1
    return c
