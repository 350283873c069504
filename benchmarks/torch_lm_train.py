"""A plain PyTorch training script of a byte-level GPT on one text file: the reference
side of benchmarks/end_to_end.py, written the way a researcher would (nanoGPT-style),
with Strata's model (benchmarks/torch_ref.py), optimizer, schedule and data order:

    python -m benchmarks.torch_lm_train --file input.txt --steps 2000

Data as Strata's `text_files` source reads it: the file's last 10% of bytes is validation;
window i is bytes [i*T, i*T + T + 1); training position p is window
permutation(seed, p // N)[p % N] (data/pipeline.py `ShuffledOrder`), batch k holds
positions k*B ... (k+1)*B - 1. AdamW (decay on matrices only), global-norm clipping,
linear warm-up then cosine decay to 0 (optax's warmup_cosine_decay_schedule). The final
validation loss is the mean cross-entropy over every token of every validation window.
Prints one JSON line: the phases' wall seconds and the losses.
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.torch_ref import GPT, adamw, lm_step  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--b2", type=float, default=0.99)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def windows(data: np.ndarray, index: np.ndarray, seq_len: int) -> torch.Tensor:
    """(n,) window indices -> (n, T + 1) int64 tokens."""
    return torch.from_numpy(data[index[:, None] * seq_len + np.arange(seq_len + 1)].astype(np.int64))


def main() -> None:
    args = parse()
    phases = {"imports": time.perf_counter() - START}
    t = time.perf_counter()
    data = np.frombuffer(open(args.file, "rb").read(), np.uint8)
    cut = len(data) - len(data) // 10
    train, val = data[:cut], data[cut:]
    num_train = (len(train) - 1) // args.seq_len
    permutation = functools.lru_cache(maxsize=2)(
        lambda epoch: np.random.default_rng([args.seed, epoch]).permutation(num_train))
    torch.manual_seed(args.seed)
    model = GPT(vocab_size=256, num_layers=args.layers, num_heads=args.heads, width=args.width,
                max_len=args.seq_len)
    opt = adamw(model, args.lr, 0.9, args.b2, 1e-8, args.weight_decay)

    def lr_factor(step: int) -> float:  # optax.warmup_cosine_decay_schedule(0, peak, warmup, steps)
        if step < args.warmup:
            return step / args.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(args.steps - args.warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    phases["setup"] = time.perf_counter() - t

    t = time.perf_counter()
    model.train()
    for k in range(args.steps):
        index = np.array([permutation(p // num_train)[p % num_train]
                          for p in range(k * args.batch, (k + 1) * args.batch)])
        loss = lm_step(model, opt, windows(train, index, args.seq_len), args.clip)
        sched.step()
    train_loss = loss.item()
    phases["steps"] = time.perf_counter() - t

    t = time.perf_counter()
    model.eval()
    total, count = 0.0, 0
    num_val = (len(val) - 1) // args.seq_len
    with torch.no_grad():
        for start in range(0, num_val, args.eval_batch):
            tokens = windows(val, np.arange(start, min(start + args.eval_batch, num_val)), args.seq_len)
            logits = model(tokens[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, 256), tokens[:, 1:].reshape(-1), reduction="sum"))
            count += tokens[:, 1:].numel()
    phases["eval"] = time.perf_counter() - t
    print(json.dumps({"phases": phases, "val_loss": total / count, "train_loss": train_loss}))


if __name__ == "__main__":
    main()
