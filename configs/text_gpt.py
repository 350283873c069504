"""A byte-level GPT on the Python standard library's source (embedded `pystdlib`).

    python run.py train  --config configs/text_gpt.py --workdir runs/text_gpt
    python run.py sample --workdir runs/text_gpt --config.sample.prompt="def "

859K parameters (4 layers, width 128, 4 heads, rotary positions, context 128 bytes).
Sized for a 2-core CPU: 500 steps of 32 windows x 128 bytes (2 MB, a sixth of the
11.7 MB train split) reach 2.09 validation bits per byte, against 4.70 for the byte
unigram entropy of the same text (eval/unigram_bits_per_byte); 2.43 at step 250 (wall
and CPU time: README.md, "What each family reaches"). `:runlocal` is a 20-step smoke
run. Any local text instead: `--config.data.name=text_files --config.data.files=a.txt,b.txt`.
"""
from configs.common import byte_lm_config, parse_arg, zip_axes


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = byte_lm_config(args.runlocal)
    c.model.name = "gpt"
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.width = 128
    c.model.mlp_ratio = 4
    c.model.max_len = 128          # = data.seq_len: the context the model is trained on
    c.model.positions = "rotary"
    c.model.dropout = 0.0
    c.model.dtype = "float32"
    c.model.scan_layers = False    # True: the blocks as one nn.scan (compile time flat in depth)

    c.optimizer.weight_decay = 0.1
    c.optimizer.b2 = 0.99

    if args.runlocal:
        c.model.num_layers = 2
        c.model.width = 32
        c.model.num_heads = 2
    return c


def get_sweep(arg: str | None = None):
    """Model size: depth and width grown together, from half the default to twice its width
    (2x128, 3x192 and 4x256 layers x width), same data and steps:

        python run.py sweep --config configs/text_gpt.py --workdir runs/gpt_sizes --parallel 2
        python run.py report runs/gpt_sizes    # eval/bits_per_byte against size
    """
    if parse_arg(arg, runlocal=False).runlocal:
        return zip_axes({"model.num_layers": [1, 2], "model.width": [32, 64]})
    return zip_axes({"model.num_layers": [2, 3, 4], "model.width": [128, 192, 256],
                     "model.num_heads": [2, 3, 4]})
