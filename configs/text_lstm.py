"""A byte-level LSTM on the Python standard library's source (embedded `pystdlib`).

    python run.py train  --config configs/text_lstm.py --workdir runs/text_lstm
    python run.py sample --workdir runs/text_lstm --prompt "def "

1.18M parameters (2 LSTM layers of 256, trained on 128-byte windows; sampling carries
the state on without limit). Sized for a 2-core CPU: 500 steps of 32 windows x 128 bytes
(2 MB of the 11.7 MB train split) reach 1.94 validation bits per byte, against 4.70 for
the byte unigram entropy of the same text (eval/unigram_bits_per_byte); 2.13 at step
250. Measured on Python 3.11.7 on a quiet 2-core CPU (2026-12-01): 1m35s wall, 2.8 min of
CPU. `:runlocal` is a 20-step smoke run.
"""
from configs.common import base_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.model.name = "rnn"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden = 256
    c.model.vocab_size = 256
    c.model.num_classes = None
    c.model.dropout = 0.0
    c.model.dtype = "float32"

    c.task.name = "language_model"
    c.task.vocab_size = 256

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

    if args.runlocal:
        c.model.num_layers = 1
        c.model.hidden = 32
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_batch_size = 16
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.log_every = 5
        c.train.eval_max_batches = 2
    return c
