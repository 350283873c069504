"""`run.py report DIR`: a table (Markdown and CSV) and plots of the runs in DIR.

DIR is a sweep (DIR/sweep.json lists its trials), a single run (DIR/metrics.jsonl), or a
folder of runs (its subfolders holding a metrics.jsonl). Writes DIR/report.md,
DIR/report.csv and DIR/plots/<metric>.png (one per metric, the runs overlaid). Trials that
differ only in seed are one row: mean ± standard deviation (n-1) over the seeds. A numeric
swept key with 3+ values also gets curves, each final eval metric against it
(DIR/plots/by_<key>_<metric>.png and a table in report.md; commands/curves.py).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

from commands.curves import mean_std, write_curves
from commands.figures import save_png
from commands.trials import name_value, short_keys
from errors import ConfigError
from train import files
from train.checks import flatten
from train.writers import read_metrics

HIGHER_IS_BETTER = ("accuracy", "psnr", "bleu", "f1", "iou", "auc", "precision", "recall")
NOT_PLOTTED = ("train/nonfinite",)


@dataclasses.dataclass
class Run:
    name: str
    group: str                 # runs of one group differ only in seed
    workdir: str
    values: dict               # swept config key -> value
    metrics: list[dict]        # metrics.jsonl rows
    config: dict               # config.json, flattened ({} before the run started)


def _load_json(path: str) -> dict:
    if not files.exists(path):
        return {}
    return json.loads(files.read_text(path))


def _run(name: str, group: str, workdir: str, values: dict) -> Run:
    return Run(name, group, workdir, values, read_metrics(os.path.join(workdir, "metrics.jsonl")),
               flatten(_load_json(os.path.join(workdir, "config.json"))))


def discover(path: str) -> tuple[list[Run], list[str], dict]:
    """(runs, swept keys, description) of a sweep, a run, or a folder of runs."""
    if files.is_remote(path):
        from train import bucket
        bucket.check_bucket(path)
    if not files.isdir(path):
        raise ConfigError(f"{path} is not a directory; give a sweep or run directory.")
    if files.exists(os.path.join(path, "metrics.jsonl")):
        name = os.path.basename(files.absolute(path).rstrip("/"))
        return [_run(name, name, path, {})], [], {}
    sweep = _load_json(os.path.join(path, "sweep.json"))
    if sweep:
        runs = [_run(t["name"], t["group"], os.path.join(path, t["name"]), t["overrides"])
                for t in sweep["trials"]]
        fixed = {**sweep.get("config_overrides", {}), **sweep["fixed"]}
        about = {"config": sweep["config"], "fixed": fixed, "seeds": sweep["seeds"]}
        return runs, sweep["axes"], about
    names = sorted(d for d in files.listdir(path) if files.exists(os.path.join(path, d, "metrics.jsonl")))
    if not names:
        raise ConfigError(f"{path} holds no runs: no sweep.json, no metrics.jsonl, and no "
                                "subfolder with one.")
    runs = [_run(n, n, os.path.join(path, n), {}) for n in names]
    keys = sorted({k for r in runs for k in r.config})
    axes = [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1
            and k not in ("train.progress", "data.data_dir", "data.num_threads")]
    for r in runs:
        r.values = {k: r.config.get(k) for k in axes}
    return runs, axes, {}


def train_seconds(perf: list[dict], log_every: int) -> float | None:
    """Wall time of the training loop from perf.jsonl rows, summed over resumed attempts.

    Each row's lap is (steps since the last row) / steps_per_sec; where a run resumed, the
    steps since its start are taken as those since the last multiple of log_every."""
    if perf and all("perf/seconds" in row for row in perf):  # exact laps, written since 12/2026
        return float(sum(row["perf/seconds"] for row in perf))
    total, prev = 0.0, None
    for row in perf:
        sps = row.get("perf/steps_per_sec") or 0.0
        if sps <= 0:
            continue
        if prev is not None and row["step"] > prev["step"]:
            total += min(row["time"] - prev["time"], (row["step"] - prev["step"]) / sps)
        else:
            total += (row["step"] if prev is None else (row["step"] - 1) % log_every + 1) / sps
        prev = row
    return total if prev is not None else None


def _higher_is_better(metric: str, config: dict) -> bool:
    if config.get("checkpoint.best_metric") == metric:
        return config.get("checkpoint.best_mode", "max") == "max"
    return any(word in metric.split("/")[-1] for word in HIGHER_IS_BETTER)


def summarize(run: Run) -> dict[str, float | None]:
    """steps, total_steps, time, and final/best of every eval metric (final train/loss)."""
    out: dict[str, float | None] = {
        "steps": run.metrics[-1]["step"] if run.metrics else 0,
        "total_steps": run.config.get("train.steps"),
        "time (s)": train_seconds(read_metrics(os.path.join(run.workdir, "perf.jsonl")),
                                  run.config.get("train.log_every", 1)),
    }
    keys = sorted({k for row in run.metrics for k in row if k.startswith("eval/")})
    for key in keys:
        series = [row[key] for row in run.metrics if isinstance(row.get(key), (int, float))]
        if series:
            pick = max if _higher_is_better(key, run.config) else min
            out[f"{key} final"], out[f"{key} best"] = series[-1], pick(series)
    losses = [row["train/loss"] for row in run.metrics if isinstance(row.get("train/loss"), (int, float))]
    if losses:
        out["train/loss final"] = losses[-1]
    return out


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if digits == 0 else f"{x:.{digits}g}"


def table(runs: list[Run], axes: list[str]) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, Markdown rows, CSV rows): one row per group of seeds."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    summaries = {r.name: summarize(r) for r in runs}
    metrics = sorted({k.rsplit(" ", 1)[0] for s in summaries.values() for k in s
                      if k.startswith("eval/") and k.endswith(" final")})
    metric_cols = [f"{m} {which}" for m in metrics for which in ("final", "best")]
    metric_cols += ["train/loss final"] if any("train/loss final" in s for s in summaries.values()) else []
    seeded = any(len(g) > 1 for g in groups.values())
    short = short_keys(axes)
    header = ["trial", *(short[k] for k in axes), *(["seeds"] if seeded else []), "steps",
              *metric_cols, "time (s)"]
    md_rows, csv_rows = [], []
    for group, members in groups.items():
        sums = [summaries[r.name] for r in members]
        first = members[0]
        steps = [s["steps"] for s in sums]
        total = next((s["total_steps"] for s in sums if s["total_steps"]), None)
        done = total is not None and min(steps) >= total
        row = [group if seeded else first.name, *(name_value(first.values.get(k, "")) for k in axes)]
        row += [str(len(members))] if seeded else []
        if total is None:  # not started: no config.json yet
            row.append(str(min(steps)) if min(steps) else "-")
        else:
            row.append(str(min(steps)) if done else f"{min(steps)}/{total}")
        record = {"trial": row[0], **{k: first.values.get(k) for k in axes},
                  **({"seeds": len(members)} if seeded else {}), "steps": min(steps), "total_steps": total}
        for col in metric_cols + ["time (s)"]:
            values = [s[col] for s in sums if s.get(col) is not None]
            if not values:
                row.append("-")
                continue
            mean, std = mean_std(values)
            digits = 0 if col == "time (s)" else 4
            spread = f" ± {_fmt(std, 2 if digits else 0)}" if std is not None else ""
            row.append(_fmt(mean, digits) + spread)
            record[col] = mean
            if seeded:
                record[f"{col} std"] = std
        md_rows.append(row)
        csv_rows.append(record)
    return header, md_rows, csv_rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    align = ["---" if h in ("trial",) or not rows or not _numeric(rows[0][i]) else "---:"
             for i, h in enumerate(header)]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _numeric(text: str) -> bool:
    try:
        float(text.split(" ")[0].split("/")[0])
        return True
    except ValueError:
        return text == "-"


def plot(runs: list[Run], directory: str) -> list[str]:
    """One PNG per metric: the runs overlaid, one colour per group (seeds share it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files.makedirs(directory)
    keys = sorted({k for r in runs for row in r.metrics for k in row} - {"step", *NOT_PLOTTED})
    keys.sort(key=lambda k: (not k.startswith("eval/"), k))
    groups = list(dict.fromkeys(r.group for r in runs))
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    paths = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        labelled = set()
        for r in runs:
            points = [(row["step"], row[key]) for row in r.metrics
                      if isinstance(row.get(key), (int, float))]
            if not points:
                continue
            xs, ys = zip(*points)
            g = groups.index(r.group)
            ax.plot(xs, ys, color=colors(g % colors.N), marker="o" if key.startswith("eval/") else None,
                    markersize=3, linewidth=1.2, alpha=0.9,
                    label=None if r.group in labelled else r.group)
            labelled.add(r.group)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(labelled) > 1:
            ax.legend(fontsize=7, loc="best" if len(labelled) <= 8 else "upper left",
                      bbox_to_anchor=None if len(labelled) <= 8 else (1.02, 1.0))
        fig.tight_layout()
        path = os.path.join(directory, key.replace("/", "_") + ".png")
        save_png(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(path: str) -> str:
    """Writes PATH/report.md, PATH/report.csv and PATH/plots/*.png; returns the Markdown."""
    runs, axes, about = discover(path)
    header, md_rows, csv_rows = table(runs, axes)
    text = markdown(header, md_rows)
    plots = plot(runs, os.path.join(path, "plots"))
    curves, sections = write_curves(runs, axes, {r.name: summarize(r) for r in runs},
                                    os.path.join(path, "plots"))
    intro = [f"# {os.path.basename(files.absolute(path).rstrip('/'))}", ""]
    if about:
        fixed = ", ".join(f"{k}={name_value(v)}" for k, v in about["fixed"].items()) or "none"
        intro += [f"config `{about['config']}`, {len(runs)} runs, seeds per trial: {about['seeds']}, "
                  f"fixed overrides: {fixed}", ""]
    images = [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in curves + plots]
    with files.open_write(os.path.join(path, "report.md")) as f:
        f.write("\n".join(intro + [text, ""] + sections + images) + "\n")
    with files.open_write(os.path.join(path, "report.csv"), newline="") as f:
        fields = list(dict.fromkeys(k for r in csv_rows for k in r))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(csv_rows)
    return (text + f"\n\nstrata: report: {os.path.join(path, 'report.md')}, "
            f"{os.path.join(path, 'report.csv')}, {len(plots) + len(curves)} plots in "
            f"{os.path.join(path, 'plots')}")


def cmd_report(args: list[str], flags) -> int:
    """`run.py report DIR`: writes DIR/report.md, report.csv and plots; prints the table."""
    path = args[0] if args else flags.workdir
    if not path or len(args) > 1:
        raise ConfigError("usage: python run.py report DIR (a sweep, or any run directory)")
    print(write_report(path))
    return 0
