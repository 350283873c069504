"""nanoGPT's "baby GPT" on Tiny Shakespeare, character (byte) level.

    python run.py prepare tiny_shakespeare                    # TFDS download, once
    python run.py train  --config configs/shakespeare_char.py --workdir runs/shakespeare
    python run.py sample --workdir runs/shakespeare --config.sample.prompt="ROMEO:"
    # or the user's own copy: --config.data.name=text_files --config.data.files=input.txt

Source: karpathy/nanoGPT config/train_shakespeare_char.py: 6 layers, 6 heads, width 384,
context 256, dropout 0.2, batch 64, AdamW lr 1e-3 (b2 0.99, weight decay 0.1), 100
warm-up steps, cosine to 1e-4 over 5000 steps. Published: validation loss 1.4697 after
~3 minutes on one A100 (nanoGPT's README); nanoGPT reports 10.65M parameters (no biases,
65 characters, position embeddings not counted). This model has biases, 256 byte ids
(Tiny Shakespeare is ASCII, so a byte is a character) and counts its positions: 10.84M
(tests/test_text_recipes.py). `:runlocal` trains a tiny model on the embedded pystdlib.
"""
from configs.common import byte_lm_config, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = byte_lm_config(args.runlocal)
    c.data.name = "tiny_shakespeare"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.seq_len = 256
    c.data.text_key = "text"
    c.checkpoint.best_metric = "eval/loss"
    c.checkpoint.best_mode = "min"

    c.model.name = "gpt"
    c.model.num_layers = 6
    c.model.num_heads = 6
    c.model.width = 384
    c.model.mlp_ratio = 4
    c.model.max_len = c.data.get_ref("seq_len")
    c.model.positions = "learned"
    c.model.tie_embeddings = True
    c.model.dropout = 0.2
    c.model.scan_layers = False    # True: the blocks as one nn.scan (compile time flat in depth)

    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.weight_decay = 0.1
    c.optimizer.b2 = 0.99
    c.optimizer.grad_clip = 1.0

    c.train.steps = 5000
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.eval_every = 250
    c.train.checkpoint_every = 1000
    c.train.eval_max_batches = 200 // 4   # nanoGPT: 200 batches of 64 (of random windows)
    c.train.eval_batch_size = 256

    if args.runlocal:
        c.data.name = "pystdlib"
        c.data.seq_len = 32
        c.model.num_layers = 1
        c.model.num_heads = 2
        c.model.width = 32
        c.model.dropout = 0.0
    return c
