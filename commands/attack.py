"""`run.py attack --workdir DIR`: how robust is the trained classifier?

    python run.py attack --workdir runs/digits_resnet [--config.attack.KEY=VALUE ...]

Attacks the newest readable checkpoint (eval mode, the EMA parameters when kept) with PGD
at each of `config.attack.budgets` (configs/common.py) on the first `attack.num_examples`
examples of data.eval_split, through the `adversarial` evaluator, and writes DIR/attack/:

    robustness.md, robustness.csv   robust accuracy per budget (budget 0: clean)
    robustness.png                  the curve
    examples.png                    clean / perturbation (amplified) / adversarial images
                                    with their predicted labels, at the largest budget
"""
from __future__ import annotations

import csv
import os
import sys
from functools import partial
from typing import Sequence

import numpy as np

from commands.figures import Cell, displayable, image_grid, save_png, to_host, to_unit
from train import files


class First(Sequence):
    """The first `n` examples of a random-access source (all of them when n is 0)."""

    def __init__(self, source: Sequence[dict], n: int):
        self.source, self.n = source, min(n, len(source)) if n else len(source)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


def build_evaluator(config, name: str = "attack"):
    """The `adversarial` evaluator that `config.attack` describes, on data.eval_split."""
    from train.evaluators.adversarial import Adversarial
    a = config.attack
    if a.num_examples < 0 or a.batch_size < 0 or a.grid_examples < 0:
        from errors import ConfigError
        raise ConfigError("config.attack.num_examples, batch_size and grid_examples must not be negative.")
    return Adversarial(
        name=name, split=config.data.eval_split, preprocess=config.data.eval_preprocess, every=0,
        batch_size=a.batch_size or config.train.eval_batch_size or config.train.batch_size,
        max_batches=0, prefix=f"eval/{name}/", norm=a.norm, budgets=tuple(a.budgets), steps=a.steps,
        step_size=a.step_size, restarts=a.restarts, random_init=a.random_init, seed=a.seed)


def _attack_batch(state, batch, rng, eps, *, model, task, evaluator):
    """Jitted: (adversarial inputs, clean logits, adversarial logits) of one batch at `eps`."""
    from train import step as step_lib
    from train.limits import attacks
    logits_fn = task.logits_fn(step_lib.eval_apply(model, state))
    x, labels = batch[task.input_key], batch[task.label_key]
    x_adv = attacks.pgd(logits_fn, x, labels, rng, eps=eps, steps=evaluator.steps,
                        step_size=attacks.default_step_size(eps, evaluator.steps, evaluator.step_size),
                        norm=evaluator.norm, bounds=task.input_range,
                        random_init=evaluator.random_init, restarts=evaluator.restarts)
    return x_adv, logits_fn(x), logits_fn(x_adv)


def grid_examples(exp, state, evaluator, source, count: int) -> dict[str, np.ndarray]:
    """The first `count` examples attacked at the largest budget, on the host: x, x_adv
    (N, ...), labels, clean and adversarial predictions (N,)."""
    import jax
    from data import pipeline
    from train.sharding import to_global
    local = next(pipeline.eval_batches(source, global_batch_size=evaluator.batch_size,
                                       preprocess=evaluator.preprocess,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()))
    batch = to_global(local, exp.mesh)
    fn = jax.jit(partial(_attack_batch, model=exp.model, task=exp.task, evaluator=evaluator))
    x_adv, clean, adv = fn(state, batch, jax.random.PRNGKey(evaluator.seed), max(evaluator.budgets))
    n = min(count, len(source))
    return {"x": to_host(batch[exp.task.input_key])[:n], "x_adv": to_host(x_adv)[:n],
            "labels": to_host(batch[exp.task.label_key])[:n],
            "clean": to_host(clean).argmax(-1)[:n], "adv": to_host(adv).argmax(-1)[:n]}


def table_rows(evaluator, clean: float, robust: list[float], count: int) -> list[dict]:
    """One row per budget, clean (budget 0) first."""
    rows = [{"norm": evaluator.norm, "budget": 0.0, "accuracy": clean, "examples": count}]
    rows += [{"norm": evaluator.norm, "budget": eps, "accuracy": acc, "examples": count}
             for eps, acc in zip(evaluator.budgets, robust) if eps > 0]
    return rows


def write_table(rows: list[dict], directory: str, header: str) -> str:
    """robustness.csv and robustness.md; returns the Markdown."""
    with files.open_write(os.path.join(directory, "robustness.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    norm = rows[0]["norm"]
    lines = [header, "", f"| budget ({norm}) | robust accuracy |", "|---:|---:|"]
    lines += [f"| {r['budget']:g}{' (clean)' if r['budget'] == 0 else ''} | {100 * r['accuracy']:.1f}% |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    files.write_text(os.path.join(directory, "robustness.md"), text)
    return text


def write_curve(rows: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["budget"] for r in rows], [100 * r["accuracy"] for r in rows], "o-")
    ax.set_xlabel(f"budget ({rows[0]['norm']} radius, input units)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)


def write_examples(ex: dict[str, np.ndarray], path: str, eps: float, norm: str,
                   bounds: tuple[float, float]) -> None:
    """Rows of clean | perturbation (scaled so the budget fills the colour range) | adversarial."""
    low, high = bounds
    rows = []
    for i in range(len(ex["labels"])):
        delta = displayable(ex["x_adv"][i] - ex["x"][i])
        scale = max(float(np.abs(delta).max()), 1e-12)
        clean_ok, adv_ok = ex["clean"][i] == ex["labels"][i], ex["adv"][i] == ex["labels"][i]
        image = lambda v: displayable(v) if displayable(v).ndim == 2 else to_unit(displayable(v), low, high)  # noqa: E731
        rows.append([
            Cell(image(ex["x"][i]), f"label {ex['labels'][i]}, pred {ex['clean'][i]}",
                 vmin=low, vmax=high, color="black" if clean_ok else "red"),
            Cell(delta if delta.ndim == 2 else to_unit(delta, -scale, scale),
                 f"perturbation x{(high - low) / 2 / scale:.3g}", cmap="RdBu_r", vmin=-scale, vmax=scale),
            Cell(image(ex["x_adv"][i]), f"{norm}={eps:g}: pred {ex['adv'][i]}",
                 vmin=low, vmax=high, color="black" if adv_ok else "red"),
        ])
    if rows:
        image_grid(rows, path)


def describe(evaluator) -> str:
    """The attack in words: FGSM where PGD reduces to it, else PGD-steps and its settings."""
    step = evaluator.step_size or 2.5 / evaluator.steps
    if evaluator.steps == 1 and evaluator.restarts == 1 and not evaluator.random_init and step >= 1:
        return "FGSM" if evaluator.norm == "linf" else "FGM (L2)"
    return (f"PGD-{evaluator.steps}, {evaluator.restarts} restart(s), step {step:g} x budget"
            f"{', random start' if evaluator.random_init else ''}")


def cmd_attack(args: list[str], flags) -> int:
    """Robust accuracy per budget of the newest checkpoint, and its figures, into DIR/attack/."""
    import jax
    from commands.workdir import experiment_and_state, overrides, workdir_flag
    from train import sharding
    workdir = workdir_flag(flags, args[0] if args else None)
    exp, state, step = experiment_and_state(workdir, overrides(flags),
                                            defaults={"attack": flags.config.attack})
    try:
        settings = exp.config.attack
        evaluator = build_evaluator(exp.config)
        sharding.check_batch(evaluator.batch_size, exp.mesh, what="attack.batch_size")
        evaluator.check(exp.task, exp.source)
        source = First(exp.source(evaluator.split, evaluator.preprocess), settings.num_examples)
        clean, robust, count = evaluator.measure(exp.eval_context(state), source)
        examples = grid_examples(exp, state, evaluator, source, settings.grid_examples)
    finally:
        exp.checkpointer.close()
    if jax.process_index() != 0:
        return 0
    out = os.path.join(workdir, "attack")
    files.makedirs(out)
    attack = describe(evaluator)
    header = (f"Robust accuracy of {workdir} (checkpoint {step}) on the first {count} examples of "
              f"{evaluator.split}; {attack}; inputs in {list(exp.task.input_range)}.")
    rows = table_rows(evaluator, clean, robust, count)
    text = write_table(rows, out, header)
    write_curve(rows, os.path.join(out, "robustness.png"),
                f"{os.path.basename(files.absolute(workdir).rstrip('/'))} (step {step})\n{attack}")
    write_examples(examples, os.path.join(out, "examples.png"), max(evaluator.budgets), evaluator.norm,
                   exp.task.input_range)
    print(text + f"\nstrata: wrote {out}/robustness.md, robustness.csv, robustness.png, examples.png",
          file=sys.stdout)
    return 0
