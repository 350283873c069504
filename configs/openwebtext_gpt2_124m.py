"""GPT-2 small (124M) on OpenWebText, nanoGPT's reproduction (karpathy/nanoGPT,
config/train_gpt2.py).

    # OpenWebText as local text files (e.g. the extracted Hugging Face `openwebtext` dump),
    # GPT-2's BPE through tiktoken (needs its cached vocabulary offline, see data/tokenizer.py):
    python run.py train --config configs/openwebtext_gpt2_124m.py --workdir runs/gpt2 \
        --config.data.files=owt_000.txt,owt_001.txt,...

Published: ~2.85 validation loss after 600k steps of ~0.5M tokens (batch 12 x 1024 x 40
gradient-accumulation steps), about 4 days on 8 A100 40GB (nanoGPT's README; GPT-2 124M
itself: 3.11 on OpenWebText without fine-tuning). Model: 12 layers, 12 heads, width 768,
context 1024, learned positions, tied input/output embeddings, no dropout, GPT-2's
50,257-token vocabulary: 124.4M parameters (124,439,808; tests/test_text_recipes.py).
AdamW lr 6e-4 (b2 0.95, weight decay 0.1, clip 1.0), 2000 warm-up steps, cosine to 6e-5.
Batch: 480 windows of 1024 tokens (nanoGPT's 491,520 tokens per step). `:runlocal`
trains a tiny model on the embedded numbers_translate German side with a 64-piece
SentencePiece vocabulary (no tiktoken needed).
"""
from configs.common import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.data.name = "text_files"
    c.data.files = ""                     # the OpenWebText text files, comma-separated
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.text_key = "text"
    c.data.tokenizer = "gpt2"
    c.data.vocab_size = 50_257
    c.data.seq_len = 1024

    c.task.name = "language_model"
    c.task.vocab_size = c.data.get_ref("vocab_size")

    c.model.name = "gpt"
    c.model.vocab_size = c.data.get_ref("vocab_size")
    c.model.num_layers = 12
    c.model.num_heads = 12
    c.model.width = 768
    c.model.mlp_ratio = 4
    c.model.max_len = c.data.get_ref("seq_len")
    c.model.positions = "learned"
    c.model.tie_embeddings = True
    c.model.dropout = 0.0
    c.model.dtype = "bfloat16"
    c.model.scan_layers = False    # True: the blocks as one nn.scan (compile time flat in depth)

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 6e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 2000
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.weight_decay = 0.1
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.grad_clip = 1.0

    c.train.steps = 600_000
    c.train.batch_size = 480
    c.train.grad_accum = 40
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    c.train.eval_max_batches = 200
    c.train.eval_batch_size = 480
    c.checkpoint.best_metric = "eval/loss"
    c.checkpoint.best_mode = "min"

    if args.runlocal:
        c.data.name = "numbers_translate"
        c.data.eval_split = "test"
        c.data.text_key = "targets"
        c.data.tokenizer = "sentencepiece"
        c.data.vocab_size = 64
        c.data.spm_max_sentences = 4000
        c.data.seq_len = 32
        c.model.num_layers = 1
        c.model.num_heads = 2
        c.model.width = 32
        c.model.dtype = "float32"
        c.optimizer.warmup_steps = 10
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.grad_accum = 1
        c.train.eval_batch_size = 16
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_max_batches = 2
    return c
