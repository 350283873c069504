"""WMT14 English -> German with the Transformer "base" (Vaswani et al. 2017, table 3).

    python run.py prepare wmt14_translate/de-en               # TFDS download, once
    python run.py train --config configs/wmt14_transformer_base.py --workdir runs/wmt14_base

Published: 27.3 BLEU on newstest2014 (base, 100k steps on 8 P100 GPUs, ~12 hours; the
paper averages the last 5 checkpoints and uses a 37k BPE vocabulary). Here: one shared
SentencePiece vocabulary of 32,000 pieces trained on the training split (the Flax WMT
example's choice), pairs packed into rows of 256 tokens per side, 6+6 layers, width 512,
8 heads, MLP 2048, dropout 0.1, label smoothing 0.1, Adam (b2 0.98, eps 1e-9) with the
rsqrt schedule (peak 7e-4 = 512^-0.5 * 4000^-0.5, 4000 warm-up steps), beam 4 with
length penalty 0.6. Batches: 128 rows x 256 tokens (~25k target tokens with packing,
the paper's ~25k per side). Parameters: 60.5M = V*E (shared, tied) + 6 encoder layers *
(4E^2 + 2*E*F + F + E + 4E) + 6 decoder layers * (8E^2 + 2*E*F + F + E + 6E) with V=32000,
E=512, F=2048 (tests/test_text_recipes.py checks it). `:runlocal` trains a tiny model on
the embedded numbers_translate data with a 64-piece vocabulary (no download).
"""
from configs.common import base_config, evaluator, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.data.name = "wmt14_translate/de-en"
    c.data.train_split = "train"
    c.data.eval_split = "test"           # newstest2014
    c.data.inputs_key = "en"
    c.data.targets_key = "de"
    c.data.tokenizer = "sentencepiece"
    c.data.vocab_size = 32_000
    c.data.spm_model_type = "unigram"
    c.data.spm_character_coverage = 1.0
    c.data.spm_max_sentences = 10_000_000
    c.data.seq_len = 256
    c.data.pack = True

    c.task.name = "translation"
    c.task.vocab_size = c.data.get_ref("vocab_size")
    c.task.label_smoothing = 0.1

    c.model.name = "transformer"
    c.model.vocab_size = c.data.get_ref("vocab_size")
    c.model.num_layers = 6
    c.model.width = 512
    c.model.num_heads = 8
    c.model.mlp_dim = 2048
    c.model.dropout = 0.1
    c.model.max_len = c.data.get_ref("seq_len")
    c.model.dtype = "bfloat16"

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 7e-4
    c.optimizer.schedule = "rsqrt"
    c.optimizer.warmup_steps = 4000
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-9

    c.train.steps = 100_000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
    c.train.eval_batch_size = 128

    c.sample.beam_size = 4
    c.sample.length_penalty = 0.6
    c.sample.max_decode_len = 256

    c.evals.translate = evaluator("translation", split="test")
    c.checkpoint.best_metric = "eval/translate/bleu"
    c.checkpoint.best_mode = "max"

    if args.runlocal:
        c.data.name = "numbers_translate"
        c.data.inputs_key, c.data.targets_key = "inputs", "targets"
        c.data.vocab_size = 64
        c.data.spm_max_sentences = 4000
        c.data.seq_len = 32
        c.model.num_layers = 1
        c.model.width = 32
        c.model.num_heads = 2
        c.model.mlp_dim = 64
        c.model.dtype = "float32"
        c.optimizer.warmup_steps = 10
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_batch_size = 16
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_max_batches = 2
        c.sample.beam_size = 2
        c.sample.max_decode_len = 8
    return c
