"""`run.py inspect DIR`: what is in a workdir's checkpoints, without building the model."""
from __future__ import annotations

import json
import os

from train.writers import read_metrics


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(workdir: str) -> str:
    """A table of checkpoints (step, size, metrics) and a short parameter tree summary."""
    import orbax.checkpoint as ocp
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{workdir} has no checkpoints directory; is it a Strata workdir?")
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    metrics = {m["step"]: m for m in read_metrics(os.path.join(workdir, "metrics.jsonl"))}
    lines = [f"workdir {os.path.abspath(workdir)}", "", "| step | size | metrics |", "|---:|---:|---|"]
    for step in steps:
        shown = {k: round(v, 4) for k, v in metrics.get(step, {}).items()
                 if k.startswith("eval/") or k == "train/loss"}
        lines.append(f"| {step} | {_human(_size(os.path.join(ckpt_dir, str(step))))} | {json.dumps(shown)} |")
    if steps:
        meta = ocp.StandardCheckpointer().metadata(os.path.join(ckpt_dir, str(steps[-1]), "state"))
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        params = tree.get("params", {}) if isinstance(tree, dict) else {}
        leaves = _leaves(params)
        total = sum(_numel(s) for _, s in leaves)
        lines += ["", f"parameters: {total:,} in {len(leaves)} arrays (latest step {steps[-1]})"]
        tops: dict[str, int] = {}
        for path, shape in leaves:
            top = path.split("/")[0]
            tops[top] = tops.get(top, 0) + _numel(shape)
        for top, n in sorted(tops.items(), key=lambda kv: -kv[1])[:12]:
            lines.append(f"  {top:<32} {n:>14,}")
        others = [k for k in (tree if isinstance(tree, dict) else {}) if k != "params"]
        lines.append(f"other state: {', '.join(sorted(others))}")
    return "\n".join(lines)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _leaves(tree, prefix=""):
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _leaves(v, f"{prefix}{k}/")
    elif hasattr(tree, "shape"):
        out.append((prefix.rstrip("/"), tuple(tree.shape)))
    return out
