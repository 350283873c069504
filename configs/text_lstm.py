"""A byte-level LSTM on the Python standard library's source (embedded `pystdlib`).

    python run.py train  --config configs/text_lstm.py --workdir runs/text_lstm
    python run.py sample --workdir runs/text_lstm --config.sample.prompt="def "

1.18M parameters (2 LSTM layers of 256, trained on 128-byte windows; sampling carries
the state on without limit). Sized for a 2-core CPU: 500 steps of 32 windows x 128 bytes
(2 MB of the 11.7 MB train split) reach 1.94 validation bits per byte, against 4.70 for
the byte unigram entropy of the same text (eval/unigram_bits_per_byte); 2.13 at step
250 (wall and CPU time: README.md, "What each family reaches"). `:runlocal` is a 20-step
smoke run.
"""
from configs.common import byte_lm_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = byte_lm_config(args.runlocal)
    c.model.name = "rnn"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden = 256
    c.model.num_classes = None
    c.model.dropout = 0.0
    c.model.dtype = "float32"

    if args.runlocal:
        c.model.num_layers = 1
        c.model.hidden = 32
    return c
