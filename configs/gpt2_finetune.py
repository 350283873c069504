"""Fine-tune a Hugging Face GPT-2 checkpoint (a `save_pretrained` folder) on the embedded
Python standard library text; sizes come from the folder's config.json.

    python run.py train --config configs/gpt2_finetune.py:hf=FOLDER --workdir runs/gpt2_ft
    python run.py export --workdir runs/gpt2_ft --format hf --out runs/gpt2_ft/hf

Tokens are the text's bytes read as GPT-2 token ids (no BPE tokenizer in the pipeline):
the run adapts the model to those ids, so start from a checkpoint to test the plumbing
and measure adaptation, not GPT-2's own perplexity. `:hf=FOLDER,runlocal` is a 20-step
smoke run. Without `hf=` the same architecture trains from scratch: GPT-2 small's sizes,
or with `:runlocal` a 2-layer, width-32 GPT-2 over bytes (what tests/test_evaluators.py runs). Any local text: `--config.data.name=text_files --config.data.files=a.txt`.
"""
from configs.common import byte_lm_config, parse_arg, read_hf_config

GELU = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}
# config.json values without a folder: GPT-2 small (openai-community/gpt2), and a tiny one.
GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
GPT2_TINY = dict(vocab_size=256, n_positions=128, n_embd=32, n_layer=2, n_head=2)


def get_config(arg: str | None = None):
    args = parse_arg(arg, hf="", runlocal=False)
    hf = read_hf_config(args.hf) if args.hf else (GPT2_TINY if args.runlocal else GPT2_SMALL)
    c = byte_lm_config(args.runlocal)
    del c.evals["unigram"]             # a byte baseline; the scores here are per token id
    c.task.vocab_size = hf["vocab_size"]  # the model follows (model.vocab_size is a reference)
    c.checkpoint.best_metric = "eval/bits_per_token" if hf["vocab_size"] != 256 else "eval/bits_per_byte"
    width = hf["n_embd"]
    c.model.name = "gpt"
    c.model.num_layers = hf["n_layer"]
    c.model.num_heads = hf["n_head"]
    c.model.width = width
    c.model.mlp_ratio = (hf.get("n_inner") or 4 * width) // width
    c.model.max_len = hf["n_positions"]
    c.model.positions = "learned"
    c.model.tie_embeddings = bool(hf.get("tie_word_embeddings", True))
    c.model.dropout = 0.0
    c.model.layer_norm_epsilon = float(hf.get("layer_norm_epsilon", 1e-5))
    c.model.gelu_approximate = GELU.get(hf.get("activation_function", "gelu_new"), True)
    c.model.dtype = "float32"
    c.data.seq_len = min(128, hf["n_positions"])  # the model reads seq_len tokens of each window
    c.checkpoint.init_from = "hf:" + args.hf if args.hf else ""

    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 20
    c.optimizer.weight_decay = 0.01
    if args.runlocal:
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 0
    return c
