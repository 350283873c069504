"""A plain PyTorch training script of ResNet-20 on scikit-learn's digits: the reference side
of benchmarks/end_to_end.py for `configs/digits_resnet.py`, written the way a researcher
would, with Strata's model (benchmarks/torch_ref.py `ResNet20`), optimizer, schedule, data
split and example order:

    python -m benchmarks.torch_digits_train [--steps 600]

The 1,437 / 360 split of data/digits.py (stratified, seed 0; pixels 0..16 scaled to
0..255, then to [-1, 1]); training position p is example permutation(seed, p // N)[p % N]
(data/pipeline.py `ShuffledOrder`), batch k holds positions k*B ... (k+1)*B - 1, each image
zero-padded by 1 and cropped back at a random offset (this script's own random draws).
SGD with Nesterov momentum 0.9, lr 0.1 after 50 linear warm-up steps then cosine to 0,
weight decay 5e-4 on matrices only; test accuracy and a checkpoint (torch.save) every 200
steps, as the config evaluates and saves. Prints one JSON line: phases and accuracy.
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from benchmarks.torch_ref import ResNet20, classification_step, sgd  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--every", type=int, default=200, help="steps between evaluations and checkpoints")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    phases = {"imports": time.perf_counter() - START}

    t = time.perf_counter()
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.float32) / 127.5 - 1.0  # (N, 8, 8)
    train_idx, test_idx = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0,
                                           stratify=digits.target)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x_train, y_train = images[train_idx], digits.target[train_idx]
    x_test = torch.from_numpy(images[test_idx][:, None])
    y_test = torch.from_numpy(digits.target[test_idx])
    n = len(x_train)
    permutation = functools.lru_cache(maxsize=2)(
        lambda epoch: np.random.default_rng([args.seed, epoch]).permutation(n))
    crops = np.random.default_rng(args.seed + 1)
    torch.manual_seed(args.seed)
    model = ResNet20(10, in_channels=1)
    opt = sgd(model, 0.1, 0.9, True, 5e-4)
    warmup = 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warmup if s < warmup else 0.5 * (
        1 + math.cos(math.pi * (s - warmup) / max(args.steps - warmup, 1))))
    ckpt_dir = tempfile.mkdtemp(prefix="torch-digits-")
    phases["setup"] = time.perf_counter() - t

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[i:i + args.batch]).argmax(1) == y_test[i:i + args.batch]).sum())
                          for i in range(0, len(x_test), args.batch))
        model.train()
        return correct / len(x_test)

    phases["steps"], phases["eval"], phases["checkpoints"] = 0.0, 0.0, 0.0
    model.train()
    for k in range(args.steps):
        t = time.perf_counter()
        index = np.array([permutation(q // n)[q % n] for q in range(k * args.batch, (k + 1) * args.batch)])
        padded = np.pad(x_train[index], ((0, 0), (1, 1), (1, 1)), constant_values=0.0)  # (B, 10, 10)
        dy, dx = crops.integers(0, 3, (2, args.batch))
        batch = np.stack([padded[i, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(args.batch)])
        classification_step(model, opt, torch.from_numpy(batch[:, None]), torch.from_numpy(y_train[index]))
        sched.step()
        phases["steps"] += time.perf_counter() - t
        if (k + 1) % args.every == 0 or k + 1 == args.steps:
            t = time.perf_counter()
            accuracy = evaluate()
            phases["eval"] += time.perf_counter() - t
            t = time.perf_counter()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": k + 1},
                       os.path.join(ckpt_dir, f"{k + 1}.pt"))
            phases["checkpoints"] += time.perf_counter() - t
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    print(json.dumps({"phases": phases, "accuracy": accuracy}))


if __name__ == "__main__":
    main()
