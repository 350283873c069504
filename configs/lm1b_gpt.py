"""A decoder-only Transformer on the One Billion Word benchmark (TFDS `lm1b`), set up as
the Flax lm1b example (google/flax examples/lm1b, configs/default.py).

    python run.py prepare lm1b                                # TFDS download, once
    python run.py train  --config configs/lm1b_gpt.py --workdir runs/lm1b
    python run.py sample --workdir runs/lm1b                  # (sampling decodes bytes only)

The example's settings: 6 layers, width 512, 8 heads, MLP 2048, dropout 0.1, a 30,000-piece
SentencePiece vocabulary trained on the data, sequences of 128 tokens, batch 256 (32 per
device on a TPU v3-8), AdamW (weight decay 0.1) with linear warm-up over 1000 steps then
inverse square root (0.05 * rsqrt(max(step, 1000)): a peak of 1.58e-3), 500k steps,
bfloat16. Rows as the example's: sentences (each ending with eos) packed into rows of 128
tokens with segment ids and positions (data.pack_documents), attention never crossing a
sentence (data/packing.py PackedDocuments). Differences here: GELU pre-LN blocks with learned
positions (the example: ReLU, sinusoids); a sentence's first token is not scored (the example
predicts it from a 0 "begin" input); a sentence longer than 129 tokens is cut into pieces
(the example drops it from training); evaluation reads packed rows of 128 too (the example:
unpacked rows of up to 512; per-token losses are the same, as attention stays within a
sentence). Published
result: the example's README gives no perplexity; eval/loss is nats per token, so
perplexity = exp(eval/loss). `:runlocal` trains a tiny model on the embedded
numbers_translate German side with a 64-piece vocabulary.
"""
from configs.common import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.data.name = "lm1b"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.text_key = "text"
    c.data.tokenizer = "sentencepiece"
    c.data.vocab_size = 30_000
    c.data.spm_model_type = "unigram"
    c.data.spm_max_sentences = 1_000_000   # the example: 10M characters of training text
    c.data.seq_len = 128
    c.data.pack_documents = True           # the example packs sentences (input_pipeline.py)

    c.task.name = "language_model"
    c.task.vocab_size = c.data.get_ref("vocab_size")

    c.model.name = "gpt"
    c.model.vocab_size = c.data.get_ref("vocab_size")
    c.model.num_layers = 6
    c.model.num_heads = 8
    c.model.width = 512
    c.model.mlp_ratio = 4
    c.model.max_len = c.data.get_ref("seq_len")
    c.model.positions = "learned"
    c.model.dropout = 0.1
    c.model.dtype = "bfloat16"
    c.model.scan_layers = False    # True: the blocks as one nn.scan (compile time flat in depth)

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 0.05 / 1000 ** 0.5
    c.optimizer.schedule = "rsqrt"
    c.optimizer.warmup_steps = 1000
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-9
    c.optimizer.weight_decay = 0.1

    c.train.steps = 500_000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
    c.train.eval_max_batches = 0
    c.checkpoint.best_metric = "eval/loss"
    c.checkpoint.best_mode = "min"

    if args.runlocal:
        c.data.name = "numbers_translate"
        c.data.text_key = "targets"
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
        c.train.eval_batch_size = 16
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_max_batches = 2
    return c
