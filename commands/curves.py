"""Curves of a sweep for `run.py report`: each final eval metric against a numeric swept
key, one line per setting of the other swept keys, mean over seeds with the seed spread.

E.g. a data-efficiency sweep (configs/digits_data_efficiency.py) gives accuracy against
`data.train_examples` on a log axis, one line per model family. A key is a curve's x
when it is numeric and takes at least 3 values; swept keys that x alone decides (a batch
size zipped with N) do not split the lines.
"""
from __future__ import annotations

import math
import os

from commands.figures import save_png
from commands.trials import name_value, short_keys

MIN_POINTS = 3       # fewer values make no curve (a 2-value axis is the ordinary table's job)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decides(runs: list, x: str, k: str) -> bool:
    """True when the value of `x` fixes the value of `k` in every run."""
    seen: dict = {}
    return all(seen.setdefault(repr(r.values.get(x)), repr(r.values.get(k))) == repr(r.values.get(k))
               for r in runs)


def x_keys(runs: list, axes: list[str]) -> list[str]:
    """The swept keys that make a curve's x: numeric for every run, >= MIN_POINTS values,
    and not decided by another such key with more values (a batch size zipped with N)."""
    numeric = [k for k in axes if all(_numeric(r.values.get(k)) for r in runs)
               and len({r.values[k] for r in runs}) >= MIN_POINTS]
    count = {k: len({r.values[k] for r in runs}) for k in numeric}
    return [k for k in numeric
            if not any(count[o] > count[k] and _decides(runs, o, k) for o in numeric if o != k)]


def line_keys(runs: list, axes: list[str], x: str) -> list[str]:
    """The other swept keys, less those that x decides (one value per x)."""
    return [k for k in axes if k != x and not _decides(runs, x, k)]


def _labels(lines: list[tuple], keys: list[str]) -> list[str]:
    """`key=value` of the first key that tells the lines apart alone, else of all keys."""
    short = short_keys(keys)
    for i, k in enumerate(keys):
        if len({line[i] for line in lines}) == len(lines):
            return [f"{short[k]}={line[i]}" for line in lines]
    return [",".join(f"{short[k]}={v}" for k, v in zip(keys, line)) for line in lines] or ["all"]


def series(runs: list, summaries: dict, x: str, keys: list[str], metric: str) -> dict[str, dict]:
    """{line label: {x value: [the metric of each seed]}}, lines and x values in sweep order."""
    lines = list(dict.fromkeys(tuple(name_value(r.values.get(k, "")) for k in keys) for r in runs))
    labels = dict(zip(lines, _labels(lines, keys)))
    out: dict[str, dict] = {labels[l]: {} for l in lines}
    for r in runs:
        value = summaries[r.name].get(metric)
        if value is None:
            continue  # not finished yet
        line = tuple(name_value(r.values.get(k, "")) for k in keys)
        out[labels[line]].setdefault(r.values[x], []).append(value)
    return out


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard deviation (n-1; None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pivot(data: dict[str, dict], x: str) -> str:
    """A Markdown table: one row per x value, one column per line, mean ± std over seeds."""
    xs = sorted({v for points in data.values() for v in points})
    header = [short_keys([x])[x], *data]
    rows = []
    for v in xs:
        cells = [name_value(v)]
        for points in data.values():
            if v not in points:
                cells.append("-")
                continue
            mean, std = mean_std(points[v])
            cells.append(f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else "")
                         + f" (n={len(points[v])})")
        rows.append(cells)
    lines = [header, ["---:"] * len(header), *rows]
    return "\n".join("| " + " | ".join(c) + " |" for c in lines)


def draw(data: dict[str, dict], x: str, metric: str, path: str) -> None:
    """The lines (mean) with their seed spread (min to max, shaded) as a PNG; x on a log
    axis when its values are positive and span 10x or more."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    colors = plt.get_cmap("tab10" if len(data) <= 10 else "tab20")
    xs_all = [v for points in data.values() for v in points]
    for i, (label, points) in enumerate(data.items()):
        xs = sorted(points)
        if not xs:
            continue
        means = [sum(points[v]) / len(points[v]) for v in xs]
        color = colors(i % colors.N)
        ax.plot(xs, means, marker="o", markersize=4, color=color, label=label)
        ax.fill_between(xs, [min(points[v]) for v in xs], [max(points[v]) for v in xs],
                        color=color, alpha=0.2, linewidth=0)
    if xs_all and min(xs_all) > 0 and max(xs_all) >= 10 * min(xs_all):
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(xs_all)))
        ax.set_xticklabels([name_value(v) for v in sorted(set(xs_all))])
        ax.minorticks_off()
    counts = sorted({len(s) for points in data.values() for s in points.values()})
    seeds = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0]) if counts else "0"
    ax.set_xlabel(x)
    ax.set_title(f"{metric} against {x}" + (f" (mean; shaded: min-max of {seeds} seeds)"
                                            if counts and counts[-1] > 1 else ""), fontsize=9)
    ax.grid(alpha=0.3)
    if len(data) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)  # a gs:// sweep too
    plt.close(fig)


def write_curves(runs: list, axes: list[str], summaries: dict, directory: str) -> tuple[list[str], list[str]]:
    """(PNG paths, Markdown sections): for each x key and each final eval metric, a curve
    DIRECTORY/by_<x>_<metric>.png and its table."""
    paths, sections = [], []
    metrics = sorted({k for s in summaries.values() for k in s if k.startswith("eval/") and k.endswith(" final")})
    for x in x_keys(runs, axes):
        keys = line_keys(runs, axes, x)
        for metric in metrics:
            data = series(runs, summaries, x, keys, metric)
            if not any(data.values()):
                continue
            name = f"by_{short_keys([x])[x]}_{metric.replace(' final', '')}".replace("/", "_")
            path = os.path.join(directory, name + ".png")
            draw(data, x, metric, path)
            paths.append(path)
            sections.append(f"### {metric} against {x}\n\n{pivot(data, x)}\n")
    return paths, sections
