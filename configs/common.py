"""Defaults shared by every config: each file starts from `base_config()` and sets what
differs. Every key the code reads is defined here, with a comment; the code reads keys
directly (no `.get(key, default)` copies of these defaults). `model.*` and `task.*` hold
the fields of the model and task classes, whose defaults live in those classes; the
`model.lora_*` keys below are the exception, common to every config (the families
without LoRA must leave them off)."""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()   # name + the model's own fields
    # LoRA (Hu et al. 2021) for gpt, vit, transformer: frozen base weights, trainable
    # low-rank adapters W + (alpha / rank) A B; only they (and lora_train) train.
    c.model.lora_rank = 0          # > 0 adds adapters of this rank; 0 = off (the plain model)
    c.model.lora_alpha = 16.0      # the adapters' output scale is lora_alpha / lora_rank
    c.model.lora_targets = ("query", "value")  # the paper's; any of query key value out mlp_in mlp_out
    c.model.lora_train = ("head/.*",)  # with lora_rank > 0, parameters that train besides the
                                   # adapters: regexes matching a whole path "a/b/kernel";
                                   # a classifier's new head must train; () = adapters only
    c.task = ml_collections.ConfigDict()    # name + the task's own fields

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.preprocess = ""         # ops string for training, e.g. "to_float|pad_crop(1)"
    c.data.eval_preprocess = ""    # ops for evaluation (deterministic); "" = no ops. The one
                                   # fallback rule: an evaluator's `preprocess` "" = this
    c.data.data_dir = ""           # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.files = ""              # comma-separated local text files (text datasets)
    c.data.seq_len = 0             # > 0: read fixed windows of tokens (language modelling);
                                   # sequence pairs: tokens per packed row, on each side
    c.data.text_key = "text"       # with seq_len > 0: the feature holding each record's bytes
    c.data.train_examples = 0      # > 0: train on the first N of a fixed permutation of the split
    c.data.class_balanced = False  # with train_examples: N / num_classes from each class
    c.data.train_classes = ()      # keep only these labels, e.g. (0, 1, 2, 3, 4); () = all
    c.data.subset_seed = 0         # the permutation's seed: the same subset whatever `seed` is
    c.data.eval_classes = ()       # evaluate (eval, attack, explain) only on these labels; () = all
    c.data.label_key = "label"     # the integer label feature, for the two above
    # Tokenised text (data/tokenizer.py, data/packing.py); bytes + no targets_key = the
    # byte windows above, unchanged.
    c.data.tokenizer = "bytes"     # bytes | sentencepiece (trained on the train split, once) | PATH.model | gpt2
    c.data.vocab_size = 0          # sentencepiece: pieces to train (task/model vocab_size must match)
    c.data.spm_model_type = "unigram"  # sentencepiece: unigram | bpe | char | word
    c.data.spm_character_coverage = 1.0  # sentencepiece: characters covered (0.9995 for big alphabets)
    c.data.spm_max_sentences = 1_000_000  # sentencepiece: training texts read at most
    c.data.inputs_key = ""         # sequence pairs (translation): the source text feature
    c.data.targets_key = ""        # sequence pairs: the target text feature; "" = not pairs
    c.data.pack = True             # sequence pairs: pack several examples per row of seq_len
    c.data.pack_documents = False  # language models: rows of whole documents packed with segment
                                   # ids and positions (Flax LM1B, MaxText) instead of windows over
                                   # the documents joined by eos (nanoGPT); needs a tokenizer path
    c.data.num_threads = 2         # Grain reader threads
    c.data.in_memory_max_mb = 256  # train split held in memory as arrays if its files are <= this (0 = never)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"     # adamw | sgd
    c.optimizer.learning_rate = 1e-3  # the peak, after warm-up
    c.optimizer.schedule = "cosine"   # cosine | constant | piecewise | rsqrt (peak / sqrt(step / warm-up) after warm-up)
    c.optimizer.boundaries = ()    # piecewise: global steps at which the rate is multiplied by decay_factor
    c.optimizer.decay_factor = 0.1  # piecewise: e.g. 0.1 = divided by 10 at each boundary
    c.optimizer.warmup_steps = 0   # linear warm-up from 0
    c.optimizer.end_lr_fraction = 0.0  # cosine: the final rate as a fraction of the peak
    c.optimizer.weight_decay = 0.0  # matrices only (ndim > 1); adamw: decoupled, sgd: L2 added to the gradient
    c.optimizer.grad_clip = 0.0    # global-norm clipping; 0 = off
    c.optimizer.momentum = 0.9     # sgd; 0 = plain SGD
    c.optimizer.nesterov = False   # sgd
    c.optimizer.b1 = 0.9           # adamw
    c.optimizer.b2 = 0.999         # adamw
    c.optimizer.eps = 1e-8         # adamw

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 128       # global: split over processes and data-parallel devices
    c.train.log_every = 50         # steps per train/* line in metrics.jsonl (>= 1)
    c.train.checkpoint_every = 500  # 0 = only at the end
    c.train.ema_decay = 0.0        # > 0 keeps an EMA of the parameters for eval/sampling
    c.train.grad_accum = 1         # microbatches per step (>= 1)
    c.train.progress = True        # the console progress bar
    c.train.trackers = ("tensorboard",)  # tensorboard and/or wandb (W&B; WANDB_MODE=offline
                                   # works; the run id is kept in DIR/wandb_id for resumes)
    c.train.profile_steps = (0, 0)  # (start, stop): jax.profiler trace of those steps
                                   # (1-based, inclusive) into DIR/profile; (0, 0) = off
    # Defaults of every evaluator (each may set its own, see `evals` below):
    c.train.eval_every = 500       # 0 = only at the end
    c.train.eval_batch_size = 0    # 0 = train.batch_size
    c.train.eval_max_batches = 0   # 0 = the whole split

    # Evaluators, big_vision style: evals.<name> = dict(type=..., split=..., ...), each a
    # module in train/evaluators/ found by `type`. Their common fields, where "" / 0 take
    # the defaults above: split ("" = data.eval_split; an empty result skips the
    # evaluator), preprocess ("" = data.eval_preprocess), every (0 = train.eval_every),
    # batch_size, max_batches, and prefix ("" = "eval/" for the one named `default`, else
    # "eval/<name>/"): metrics.jsonl keys are prefix + metric.
    c.evals = ml_collections.ConfigDict()
    c.evals.default = evaluator("metrics")

    # `run.py sample` (and the diffusion sample-quality evaluator's sampler settings).
    c.sample = ml_collections.ConfigDict()
    c.sample.seed = 0              # run.py sample draws from this seed: reproducible
    c.sample.prompt = ""           # language models: the text to continue
    c.sample.num_tokens = 256      # language models: tokens to generate
    c.sample.temperature = 0.8     # language models: 0 = greedy
    c.sample.top_k = 0             # language models: 0 = all tokens
    c.sample.end_token = -1        # language models: stop after this token id (-1 = never)
    c.sample.beam_size = 1         # translation: 1 = greedy decoding, > 1 = beam search
    c.sample.length_penalty = 0.6  # translation: beam scores / ((5 + len) / 6) ** alpha (GNMT)
    c.sample.max_decode_len = 0    # translation: tokens to generate at most; 0 = model.max_len
    c.sample.sampler = "ddim"      # diffusion: ddim (sample.steps steps) | ddpm (all task.num_steps)
    c.sample.steps = 50            # diffusion: DDIM steps
    c.sample.eta = 0.0             # diffusion: DDIM stochasticity (0 = deterministic)
    c.sample.guidance = 1.0        # diffusion: classifier-free guidance (1 = plain conditional)
    c.sample.per_class = 10        # diffusion: columns of the PNG grid (one row per class)

    # `run.py attack`: robust accuracy of a trained classifier under PGD, one row per budget
    # (train/limits/attacks.py; the `adversarial` evaluator takes the same fields). Budgets
    # are ball radii in the model's input units after preprocessing, inside task.input_range
    # (digits: [-1, 1], so 0.1 is 5% of the range per pixel for linf).
    c.attack = ml_collections.ConfigDict()
    c.attack.norm = "linf"         # linf | l2
    c.attack.budgets = (0.02, 0.05, 0.1, 0.2, 0.3)
    c.attack.steps = 20            # PGD steps per restart (steps=1, step_size=1, random_init=False: FGSM)
    c.attack.step_size = 0.0       # per step, as a fraction of the budget; 0 = 2.5 / steps
    c.attack.restarts = 1          # random restarts; the worst case per example is kept
    c.attack.random_init = True    # start each restart at a random point of the ball
    c.attack.num_examples = 0      # the first N examples of data.eval_split; 0 = all of them
    c.attack.batch_size = 0        # 0 = train.eval_batch_size, else train.batch_size
    c.attack.grid_examples = 8     # rows of DIR/attack/examples.png (at the largest budget)
    c.attack.seed = 0              # random starts: the same seed gives the same numbers

    # `run.py explain`: attribution maps of the first examples of data.eval_split
    # (train/limits/attributions.py), for the predicted class.
    c.explain = ml_collections.ConfigDict()
    c.explain.method = ""          # saliency: gradients, SmoothGrad, IG | rollout: attention rollout (ViT) |
                                   # tokens: language models; "" = tokens for a language model, else saliency
    c.explain.prompt = "def __init__(self, name):\n    self.name = name\n"  # tokens: the text explained
    c.explain.num_examples = 8     # rows of DIR/explain/attributions.png
    c.explain.smoothgrad_samples = 32
    c.explain.smoothgrad_sigma = 0.15  # noise std as a fraction of task.input_range (paper: 0.1-0.2)
    c.explain.ig_steps = 256       # Integrated Gradients: midpoint-rule points on the path (64 left a
                                   # 7% completeness gap on digits_resnet, 256 one of 0.4%)
    c.explain.ig_baseline = "low"  # low (task.input_range's low end: black) | zeros
    c.explain.seed = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep = 3
    c.checkpoint.best_metric = ""  # e.g. "eval/accuracy": also keep the best checkpoint
    c.checkpoint.best_mode = "max"
    c.checkpoint.async_save = True
    c.checkpoint.init_from = ""    # fine-tuning start: a workdir, its checkpoints/ or one step folder,
                                   # or hf:FOLDER (a Hugging Face save_pretrained folder)
    c.checkpoint.init_strict = True  # False: load the matching parameters, keep the rest fresh

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1               # -1 = all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.rules = ()              # () = train.sharding.DEFAULT_RULES (config.json shows the resolved rules)
    return c


def evaluator(type: str, **fields) -> ml_collections.ConfigDict:
    """An `evals.<name>` entry: its type, the common fields (all defaulting to the
    train/data defaults, see `base_config`) and the type's own `fields`."""
    common = dict(type=type, split="", preprocess="", every=0, batch_size=0, max_batches=0, prefix="")
    return ml_collections.ConfigDict({**common, **fields})


def digits_resnet_config(runlocal: bool = False) -> ml_collections.ConfigDict:
    """`base_config()` with the ResNet-20 recipe on the embedded digits that
    configs/digits_resnet.py trains (and digits_resnet_adv.py trains adversarially): SGD
    with Nesterov momentum 0.1, 50 warm-up steps then cosine, weight decay 5e-4, 600 steps
    of batch 128, pad-1 crops; `runlocal` makes it a 60-step smoke run."""
    c = base_config()
    c.task.num_classes = 10
    c.model.name = "resnet"
    c.model.depth = 20
    c.model.family = "cifar"
    c.model.width = 16            # channels of the first stage (16-32-64)
    c.model.num_classes = c.task.get_ref("num_classes")  # set once, in task.num_classes
    c.model.dtype = "float32"

    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.data.name = "digits"
    c.data.preprocess = "to_float(-1, 1)|pad_crop(1)"
    c.data.eval_preprocess = "to_float(-1, 1)"

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 50

    c.train.steps = 600
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.checkpoint.best_metric = "eval/accuracy"

    if runlocal:
        c.train.steps = 60
        c.train.eval_every = 30
        c.train.checkpoint_every = 30
        c.train.log_every = 10
    return c


def byte_lm_config(runlocal: bool = False) -> ml_collections.ConfigDict:
    """`base_config()` with what the byte-level language models share: the embedded
    pystdlib text in 128-byte windows, the language-model task, AdamW with warm-up and
    clipping, 500 steps of 32 windows, evaluation on the whole validation split, the best
    checkpoint by bits per byte. The caller sets `model.*` and any optimizer differences;
    `runlocal` makes it a 20-step smoke run."""
    c = base_config()
    c.task.name = "language_model"
    c.task.vocab_size = 256
    c.model.vocab_size = c.task.get_ref("vocab_size")  # set once: the model follows the task

    c.data.name = "pystdlib"
    c.data.eval_split = "validation"
    c.data.seq_len = 128

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0

    c.train.steps = 500
    c.train.batch_size = 32        # 32 windows x 128 bytes = 4 KiB of text per step
    c.train.eval_batch_size = 64
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.train.eval_max_batches = 0   # the whole validation split: 2,701 windows, 346 KB
    c.checkpoint.best_metric = "eval/bits_per_byte"
    c.checkpoint.best_mode = "min"
    # The byte entropy of the scored validation text: what a model without context reaches.
    c.evals.unigram = evaluator("unigram_baseline", prefix="eval/")

    if runlocal:
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_batch_size = 16
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.log_every = 5
        c.train.eval_max_batches = 2
    return c


def parse_arg(arg: str | None, **defaults):
    """"key=value,key2=value2" -> ConfigDict of `defaults` with those values (typed)."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, eq, value = item.partition("=")
        if not eq:  # a bare flag name, e.g. `:runlocal`, means True
            value = "true"
        if key not in out:
            raise ValueError(f"unknown config arg {key!r}. Valid: {', '.join(sorted(out))}.")
        kind = type(out[key])
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


def read_hf_config(folder: str) -> dict:
    """The config.json of a Hugging Face `save_pretrained` folder (for configs that size
    their model from it, e.g. configs/gpt2_finetune.py:hf=FOLDER)."""
    import json
    import os
    path = os.path.join(os.path.expanduser(folder), "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder!r} has no config.json; give the folder save_pretrained wrote.")
    with open(path) as f:
        return json.load(f)


# --- Sweeps: a config file's optional `get_sweep(arg)` returns a list of trials, each a
# dict of overrides {"optimizer.learning_rate": 0.1, "model.depth": 20}. These helpers
# build such lists; `python run.py sweep` runs them (see train/sweeps.py).

def _axis_values(key: str, values) -> list:
    if not isinstance(values, (list, tuple, range)):
        raise TypeError(f"sweep axis {key!r} needs a list of values, got {values!r}; "
                        f"write [{values!r}] for a single value.")
    return list(values)


def _as_trials(part) -> list[dict]:
    if isinstance(part, dict):  # axes {key: [values]}: their product
        trials = [{}]
        for key, values in part.items():
            trials = [{**t, key: v} for t in trials for v in _axis_values(key, values)]
        return trials
    return [dict(t) for t in part]  # already a list of trials


def product(*parts) -> list[dict]:
    """Every combination of the parts' trials, the last key varying fastest.

    A part is a dict of axes `{key: [values]}` or a list of trials:

        product({"optimizer.learning_rate": [0.03, 0.1], "model.depth": [8, 20]})  # 4 trials
        product(zip_axes({"model.width": [64, 128], "model.num_heads": [2, 4]}),
                {"optimizer.learning_rate": [1e-3, 3e-3]})                         # 4 trials
    """
    trials = [{}]
    for part in parts:
        trials = [{**t, **o} for t in trials for o in _as_trials(part)]
    return trials


def zip_axes(axes: dict) -> list[dict]:
    """One trial per position: zip_axes({"a": [1, 2], "b": [3, 4]}) -> [{a: 1, b: 3}, {a: 2, b: 4}]."""
    columns = {k: _axis_values(k, v) for k, v in axes.items()}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zip_axes needs axes of one length, got {lengths}.")
    n = next(iter(lengths.values()), 0)
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def uniform(low: float, high: float, digits: int = 2):
    """For `random_search`: a float in [low, high), rounded to `digits` significant digits."""
    return lambda rng: float(f"{low + (high - low) * rng.random():.{digits}g}")


def log_uniform(low: float, high: float, digits: int = 2):
    """For `random_search`: a float whose log is uniform in [log low, log high) (learning
    rates, weight decays), rounded to `digits` significant digits."""
    import math
    lo, hi = math.log(low), math.log(high)
    return lambda rng: float(f"{math.exp(lo + (hi - lo) * rng.random()):.{digits}g}")


def random_search(space: dict, num_trials: int, seed: int = 0) -> list[dict]:
    """`num_trials` distinct trials drawn from `space`; the same seed gives the same trials.

    Each value in `space` is a list (one element, chosen uniformly), `uniform(lo, hi)` or
    `log_uniform(lo, hi)`, or a constant:

        random_search({"optimizer.learning_rate": log_uniform(1e-3, 1e-1),
                       "model.depth": [8, 14, 20]}, num_trials=6, seed=0)
    """
    import random
    rng = random.Random(seed)  # Mersenne Twister: the same draws on every Python version
    trials: list[dict] = []
    for _ in range(100 * num_trials):
        if len(trials) == num_trials:
            break
        trial = {}
        for key, value in space.items():
            if callable(value):
                trial[key] = value(rng)
            elif isinstance(value, (list, tuple, range)):
                trial[key] = list(value)[rng.randrange(len(value))]
            else:
                trial[key] = value
        if trial not in trials:
            trials.append(trial)
    if len(trials) < num_trials:
        raise ValueError(f"random_search found only {len(trials)} distinct trials of {num_trials}; "
                         "widen the space or keep more digits.")
    return trials
