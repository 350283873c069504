"""Class-conditional DDPM (small U-Net, classifier-free guidance) on the embedded digits.

    python run.py train  --config configs/digits_ddpm.py --workdir runs/digits_ddpm
    python run.py sample --workdir runs/digits_ddpm [--config.sample.guidance=2] [--config.sample.sampler=ddpm]
        # -> runs/digits_ddpm/samples_ddim50_guidance2.png: 10 rows (digits 0-9) x 10

Sized for a 2-core CPU: a 652k-parameter U-Net (32-64 channels, 8x8 and 4x4, attention
only in the middle), 2,000 steps of batch 64 (~89 epochs of 1,437 images), EMA 0.998
(wall and CPU time: README.md, "What each family reaches").

    step  eval/sample_accuracy  eval/fd  eval/fd_real_floor  eval/loss
    1000  0.964                 5.28     1.22                0.115
    2000  0.994                 2.34     1.22                0.088

`eval/sample_accuracy` is the share of 360 samples (36 per class; DDIM, 50 steps,
guidance 2) that a fixed MLP classifier fitted on the train split puts in the class they
were conditioned on (it gets 98.1% of the real test images right); `eval/fd` is the
Frechet distance in that classifier's 128 hidden features between the train split and
the samples, beside `eval/fd_real_floor`, the same distance for the 360 real test images.
Guidance trades accuracy for diversity (same checkpoint, DDIM 50, 360 samples):

    guidance           0      1      2      3      5
    sample_accuracy    0.111  0.944  0.997  1.000  1.000
    fd                 2.86   1.06   2.31   3.76   5.56

(fd can go below the floor: the floor measures held-out images against the train split,
while samples imitate the train split itself.)
`run.py sample --config.sample.sampler=ddpm` (1,000 ancestral steps, guidance 2): 99% of 100 samples
classified as conditioned. `:runlocal` is a 10-step smoke run of a tiny U-Net.
"""
from configs.common import base_config, evaluator, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.task.num_classes = 10
    c.model.name = "unet"
    c.model.channels = 32
    c.model.channel_mults = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = ()
    c.model.num_classes = c.task.get_ref("num_classes")  # set once, in task.num_classes
    c.model.dropout = 0.0
    c.model.num_groups = 8
    c.model.dtype = "float32"

    c.task.name = "diffusion"
    c.task.num_steps = 1000
    c.task.schedule = "cosine"
    c.task.cond_drop = 0.1

    # Sampling (run.py sample, and the sample-quality evaluator): DDIM, 50 steps, guidance 2.
    c.sample.sampler = "ddim"
    c.sample.steps = 50
    c.sample.guidance = 2.0
    c.sample.per_class = 10
    # 36 samples per digit class make 360, the size of the test split, so `fd` and
    # `fd_real_floor` compare sets of equal size.
    c.evals.samples = evaluator("sample_quality", prefix="eval/", samples_per_class=36)

    c.data.name = "digits"
    c.data.preprocess = "to_float(-1, 1)"
    c.data.eval_preprocess = "to_float(-1, 1)"

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip = 1.0

    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.ema_decay = 0.998  # 0.998**2000: the initial weights keep 2% of the average
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000

    if args.runlocal:
        c.model.channels = 8
        c.model.channel_mults = (1,)
        c.model.num_groups = 4
        c.task.num_steps = 100
        c.sample.steps = 5
        c.sample.per_class = 2
        c.evals.samples.samples_per_class = 2
        c.train.steps = 10
        c.train.batch_size = 32
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.ema_decay = 0.9
    return c
