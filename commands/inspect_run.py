"""`run.py inspect DIR`: what is in a workdir's checkpoints, without building the model.

One row per checkpoint (step, size, parameter count, the metrics logged at that step,
which is the latest and which the best), then a short tree summary of the newest
readable one, any checkpoints set aside as unreadable or left half-written, and the
profiler traces under DIR/profile (`train.profile_steps`).
"""
from __future__ import annotations

import json
import os
from typing import Any

from errors import ConfigError
from train import files
from train.writers import read_metrics


def _size(path: str) -> int:
    return sum(size for _, size in files.walk_sizes(path))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _state_tree(state_dir: str) -> dict | None:
    """The saved state's metadata tree (shapes and dtypes, no array data); None if unreadable."""
    import orbax.checkpoint as ocp
    try:
        meta = ocp.StandardCheckpointer().metadata(state_dir)
    except Exception:
        return None
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return tree if isinstance(tree, dict) else None


def _saved_metrics(step_dir: str) -> dict:
    """The metrics stored with a checkpoint (those that rank the best one), if any."""
    path = os.path.join(step_dir, "metrics", "metrics")
    try:
        return json.loads(files.read_text(path))
    except (OSError, ValueError):
        return {}


def _best_step(workdir: str, saved: dict[int, dict]) -> int | None:
    try:
        ckpt = json.loads(files.read_text(os.path.join(workdir, "config.json"))).get("checkpoint", {})
    except (OSError, ValueError):
        return None
    metric, mode = ckpt.get("best_metric"), ckpt.get("best_mode", "max")
    ranked = [(m[metric], s) for s, m in saved.items() if metric and metric in m]
    if not ranked:
        return None
    return (max if mode == "max" else min)(ranked)[1]


def describe(workdir: str) -> str:
    """A table of checkpoints (step, size, parameters, metrics) and a short tree summary."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if files.is_remote(workdir):
        from train import bucket
        bucket.check_bucket(workdir)
    if not files.isdir(ckpt_dir):
        raise ConfigError(f"{workdir} has no checkpoints directory; is it a Strata workdir?")
    entries = files.listdir(ckpt_dir)
    steps = sorted(int(d) for d in entries if d.isdigit())
    logged = {m["step"]: m for m in read_metrics(os.path.join(workdir, "metrics.jsonl"))
              if isinstance(m, dict) and "step" in m}
    trees = {s: _state_tree(os.path.join(ckpt_dir, str(s), "state")) for s in steps}
    saved = {s: _saved_metrics(os.path.join(ckpt_dir, str(s))) for s in steps}
    best = _best_step(workdir, saved)

    lines = [f"workdir {files.absolute(workdir)}", "",
             "| step | size | parameters | metrics | |", "|---:|---:|---:|---|---|"]
    for step in steps:
        row = {**logged.get(step, {}), **saved[step]}
        shown = {k: round(v, 4) for k, v in sorted(row.items())
                 if isinstance(v, (int, float)) and (k.startswith("eval/") or k == "train/loss")}
        tree = trees[step]
        params = f"{_count(tree.get('params', {})):,}" if tree is not None else "unreadable"
        tags = [t for t, on in (("latest", step == steps[-1]), ("best", step == best)) if on]
        lines.append(f"| {step} | {_human(_size(os.path.join(ckpt_dir, str(step))))} | {params} | "
                     f"{json.dumps(shown)} | {', '.join(tags)} |")
    if not steps:
        lines.append("| (none yet) | | | | |")

    readable = [s for s in steps if trees[s] is not None]
    if readable:
        lines += [""] + _tree_summary(trees[readable[-1]], readable[-1])
    aside = sorted(d for d in files.listdir(workdir) if d.startswith("checkpoints-unreadable-"))
    partial = sorted(d for d in entries if not d.isdigit() and "tmp" in d)
    if aside:
        lines.append(f"set aside as unreadable (kept, not used): {', '.join(aside)}")
    if partial:
        lines.append(f"unfinished saves (removed by the next run): {', '.join(partial)}")
    from train.profiler import list_traces
    traces = list_traces(workdir)
    if traces:  # train.profile_steps; open with TensorBoard's profile plugin or XProf
        lines += ["", f"profile traces (tensorboard --logdir {os.path.join(workdir, 'profile')}):"]
        lines += [f"  {path}  {_human(size)}" for path, size in traces]
    return "\n".join(lines)


def _tree_summary(tree: dict, step: int) -> list[str]:
    leaves = _leaves(tree.get("params", {}))
    total = sum(_numel(s) for _, s in leaves)
    lines = [f"parameters: {total:,} in {len(leaves)} arrays (step {step})"]
    tops: dict[str, int] = {}
    for path, shape in leaves:
        top = path.split("/")[0]
        tops[top] = tops.get(top, 0) + _numel(shape)
    shown = sorted(tops.items(), key=lambda kv: -kv[1])
    for top, n in shown[:12]:
        lines.append(f"  {top:<32} {n:>14,}")
    if len(shown) > 12:
        lines.append(f"  ... {len(shown) - 12} more")
    other = []
    for key in sorted(k for k in tree if k != "params"):
        value = tree[key]
        if value is None:
            other.append(f"{key}: none")
        elif key == "model_state" and isinstance(value, dict):
            other += [f"{key}/{c}: {_count(v):,} values" for c, v in sorted(value.items())]
        else:
            other.append(f"{key}: {_count(value):,} values")
    lines.append("other state: " + "; ".join(other))
    return lines


def _count(tree: Any) -> int:
    return sum(_numel(s) for _, s in _leaves(tree))


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
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out += _leaves(v, f"{prefix}{i}/")
    elif hasattr(tree, "shape"):
        out.append((prefix.rstrip("/"), tuple(tree.shape)))
    return out


def cmd_inspect(args: list[str], flags) -> int:
    """`run.py inspect WORKDIR`: its checkpoints, their metrics, sizes and parameters."""
    path = args[0] if args else flags.workdir
    if not path:
        raise ConfigError("usage: python run.py inspect WORKDIR")
    print(describe(path))
    return 0
