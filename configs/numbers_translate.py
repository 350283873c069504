"""English number words -> German number words (embedded `numbers_translate`), a small
encoder-decoder Transformer on a 2-core CPU.

    python run.py train  --config configs/numbers_translate.py --workdir runs/nt
    python run.py sample --workdir runs/nt --config.sample.prompt="four thousand and twelve"

"three hundred and forty-two thousand and seven" -> "dreihundertzweiundvierzigtausendsieben":
38k training pairs, 2,021 held-out numbers (never seen in training). A 128-piece
SentencePiece vocabulary trained on the training split, pairs packed into rows of 48
tokens per side, a post-LN Transformer of 2+2 layers, width 64, label smoothing 0.1,
Adam with the rsqrt schedule. Evaluation decodes the whole test split greedily and
reports eval/translate/exact_match and eval/translate/bleu (measured figures: README.md,
"What each family reaches"). `:runlocal` is a 20-step smoke run.
"""
from configs.common import base_config, evaluator, parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, runlocal=False)
    c = base_config()
    c.data.name = "numbers_translate"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.inputs_key = "inputs"
    c.data.targets_key = "targets"
    c.data.tokenizer = "sentencepiece"
    c.data.vocab_size = 128
    c.data.spm_model_type = "unigram"
    c.data.spm_character_coverage = 1.0
    c.data.spm_max_sentences = 100_000  # all 76k training sentences (both sides)
    c.data.seq_len = 48                 # tokens per packed row and side (longest pair: ~35)
    c.data.pack = True

    c.task.name = "translation"
    c.task.vocab_size = c.data.get_ref("vocab_size")
    c.task.label_smoothing = 0.1

    c.model.name = "transformer"
    c.model.vocab_size = c.data.get_ref("vocab_size")
    c.model.num_layers = 2
    c.model.width = 64
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.dropout = 0.0
    c.model.max_len = c.data.get_ref("seq_len")

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "rsqrt"
    c.optimizer.warmup_steps = 100
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-9
    c.optimizer.grad_clip = 1.0

    c.train.steps = 1200
    c.train.batch_size = 32            # 32 rows x 48 tokens: ~100 pairs per step
    c.train.log_every = 100
    c.train.eval_every = 600
    c.train.checkpoint_every = 600
    c.train.eval_batch_size = 256

    c.sample.beam_size = 1
    c.sample.length_penalty = 0.6
    c.sample.max_decode_len = 40       # the longest German target is ~35 pieces + eos

    # Each German number is one word, so BLEU is taken over characters.
    c.evals.translate = evaluator("translation", split="test", bleu_tokenize="char")
    c.checkpoint.best_metric = "eval/translate/exact_match"
    c.checkpoint.best_mode = "max"

    if args.runlocal:
        c.data.spm_max_sentences = 4000
        c.data.seq_len = 32
        c.model.num_layers = 1
        c.model.width = 32
        c.model.num_heads = 2
        c.model.mlp_dim = 64
        c.train.steps = 20
        c.train.batch_size = 16
        c.train.eval_batch_size = 16
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_max_batches = 2
        c.sample.max_decode_len = 8
    return c
