"""`run.py explain --workdir DIR`: what does the trained classifier look at?

    python run.py explain --workdir runs/digits_resnet [--config.explain.KEY=VALUE ...]

For the first `config.explain.num_examples` examples of data.eval_split, the newest readable
checkpoint's predicted class is explained by vanilla gradients, SmoothGrad and Integrated
Gradients (train/limits/attributions.py). Writes DIR/explain/attributions.png: per row the
input (label, prediction, probability), |gradient|, |SmoothGrad| and the signed IG map
(red raises the predicted logit, blue lowers it), channels summed. Prints the IG
completeness gap, |sum IG - (f(x) - f(baseline))|, as a check of the numbers (a ReLU
network is not smooth: more `ig_steps` shrink it).

`--config.explain.method=rollout` (the ViT): attention rollout (Abnar & Zuidema 2020)
instead, per row the input and how much the output draws on each patch, into
DIR/explain/rollout.png. On a byte language model (`method=tokens`, its default):
per-token attributions of `explain.prompt` (commands/explain_text.py).
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from commands.figures import Cell, displayable, image_grid, to_host, to_unit

BASELINES = ("low", "zeros")
METHODS = ("saliency", "rollout", "tokens")  # explain.method; "" = tokens for a language
                                             # model, else saliency


def _rollout(state, batch, *, model, task):
    """Jitted: attention rollout of one batch (models that sow `attention`, e.g. the ViT),
    per input token: the mean of the last layer's rows (pool "gap") or the class token's
    row (a class token first: one token more than the patches)."""
    import jax
    import jax.numpy as jnp
    from train.limits import attributions as attr
    x = batch[task.input_key]
    variables = {"params": state.eval_params(), **state.model_state}
    logits, inter = model.apply(variables, x, train=False, mutable=["intermediates"])
    attentions = attr.sown_attention(inter.get("intermediates", {}))
    if not attentions:
        from errors import ConfigError
        raise ConfigError(f"explain.method=rollout needs a model that sows its attention "
                          f"(the ViT); {type(model).__name__} does not.")
    rollout = attr.attention_rollout(attentions)  # (B, N, N)
    tokens = rollout[:, 0, 1:] if getattr(model, "pool", "gap") == "cls" else jnp.mean(rollout, axis=1)
    return {"x": x, "probs": jax.nn.softmax(logits.astype(jnp.float32)),
            "targets": jnp.argmax(logits, -1), "rollout": tokens, "row_sums": rollout.sum(-1)}


def rollout_image(tokens: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N,) per-patch relevance -> an (H, W) map: the patches in raster order, each
    patch's value over its pixels."""
    n = tokens.shape[0]
    h, w = shape
    side = int(round((n * h / w) ** 0.5))  # patch rows, for H/side x W/(n/side) patches
    grid = tokens.reshape(side, n // side)
    return np.kron(grid, np.ones((h // grid.shape[0], w // grid.shape[1])))


def input_cell(out: dict[str, np.ndarray], labels: np.ndarray, i: int,
               bounds: tuple[float, float]) -> Cell:
    """Example i with its label, prediction and probability (red when wrong)."""
    low, high = bounds
    x, pred = displayable(out["x"][i]), int(out["targets"][i])
    return Cell(x if x.ndim == 2 else to_unit(x, low, high),
                f"label {labels[i]}, pred {pred} ({out['probs'][i, pred]:.2f})",
                vmin=low, vmax=high, color="black" if pred == int(labels[i]) else "red")


def write_rollout_grid(out: dict[str, np.ndarray], labels: np.ndarray, path: str,
                       bounds: tuple[float, float]) -> None:
    shape = displayable(out["x"][0]).shape[:2]
    image_grid([[input_cell(out, labels, i, bounds),
                 Cell(rollout_image(out["rollout"][i], shape), "attention rollout", cmap="magma", vmin=0)]
                for i in range(len(labels))], path)


def _explain(state, batch, rng, *, model, task, settings):
    """Jitted: the attributions of one batch for its predicted classes."""
    import jax
    import jax.numpy as jnp
    from train import step as step_lib
    from train.limits import attributions as attr
    logits_fn = task.logits_fn(step_lib.eval_apply(model, state))
    x = batch[task.input_key]
    logits = logits_fn(x)
    targets = jnp.argmax(logits, -1)
    low, high = task.input_range
    baseline = jnp.full_like(x, low) if settings.ig_baseline == "low" else jnp.zeros_like(x)
    ig = attr.integrated_gradients(logits_fn, x, targets, baseline=baseline, steps=settings.ig_steps)
    change = attr.target_logits(logits_fn, x, targets) - attr.target_logits(logits_fn, baseline, targets)
    return {"x": x, "probs": jax.nn.softmax(logits.astype(jnp.float32)), "targets": targets,
            "gradients": attr.vanilla_gradients(logits_fn, x, targets),
            "smoothgrad": attr.smoothgrad(logits_fn, x, targets, rng,
                                          samples=settings.smoothgrad_samples,
                                          sigma=settings.smoothgrad_sigma * (high - low)),
            "ig": ig, "ig_change": change, "ig_gap": ig.reshape(x.shape[0], -1).sum(1) - change}


def _map(a: np.ndarray) -> np.ndarray:
    """One example's attribution (..., C) -> a 2-D map, channels summed."""
    d = displayable(a)
    return d.sum(-1) if d.ndim == 3 else d


def write_grid(out: dict[str, np.ndarray], labels: np.ndarray, path: str,
               bounds: tuple[float, float]) -> None:
    rows = []
    for i in range(len(labels)):
        grad, smooth, ig = (_map(out[k][i]) for k in ("gradients", "smoothgrad", "ig"))
        ig_scale = max(float(np.abs(ig).max()), 1e-12)
        rows.append([
            input_cell(out, labels, i, bounds),
            Cell(np.abs(grad), "|gradient|", cmap="magma", vmin=0),
            Cell(np.abs(smooth), "|SmoothGrad|", cmap="magma", vmin=0),
            Cell(ig, "Integrated Gradients", cmap="RdBu_r", vmin=-ig_scale, vmax=ig_scale),
        ])
    image_grid(rows, path)


def cmd_explain(args: list[str], flags) -> int:
    """Attribution maps of the first eval examples into DIR/explain/attributions.png."""
    import jax
    from commands.attack import First
    from commands.workdir import experiment_and_state, overrides, workdir_flag
    from data import pipeline
    from errors import ConfigError, unknown_name_message
    from train import sharding
    from train.sharding import to_global
    workdir = workdir_flag(flags, args[0] if args else None)
    exp, state, step = experiment_and_state(workdir, overrides(flags),
                                            defaults={"explain": flags.config.explain})
    try:
        s = exp.config.explain
        if s.ig_baseline not in BASELINES:
            raise ConfigError(unknown_name_message("explain.ig_baseline", s.ig_baseline, list(BASELINES)))
        if s.num_examples < 1 or s.smoothgrad_samples < 1 or s.ig_steps < 1 or s.smoothgrad_sigma < 0:
            raise ConfigError("config.explain.num_examples, smoothgrad_samples and ig_steps must be "
                              ">= 1 and smoothgrad_sigma >= 0.")
        language_model = getattr(exp.task, "vocab_size", 0) == 256 and not hasattr(exp.task, "logits_fn")
        method = s.method or ("tokens" if language_model else "saliency")
        if method not in METHODS:
            raise ConfigError(unknown_name_message("explain.method", method, list(METHODS)))
        if method == "tokens":
            if not language_model:
                raise ConfigError(f"explain.method=tokens needs a byte language model (task.vocab_size=256), "
                                  f"got {type(exp.task).__name__}.")
            from commands.explain_text import explain_tokens
            return explain_tokens(exp, state, step, workdir, s)
        if not hasattr(exp.task, "logits_fn"):
            raise ConfigError(f"explain.method={method} needs a classification task, got "
                              f"{type(exp.task).__name__}.")
        dp = sharding.data_parallel_size(exp.mesh)
        batch_size = -(-s.num_examples // dp) * dp  # the examples, rounded up to the devices
        source = First(exp.source(exp.config.data.eval_split, exp.config.data.eval_preprocess),
                       s.num_examples)
        local = next(pipeline.eval_batches(source, global_batch_size=batch_size,
                                           preprocess=exp.config.data.eval_preprocess,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()))
        batch = to_global(local, exp.mesh)
        if method == "rollout":
            out = jax.jit(partial(_rollout, model=exp.model, task=exp.task))(state, batch)
        else:
            fn = jax.jit(partial(_explain, model=exp.model, task=exp.task, settings=s))
            out = fn(state, batch, jax.random.PRNGKey(s.seed))
        out = {k: to_host(v)[:len(source)] for k, v in out.items()}
        labels = to_host(batch[exp.task.label_key])[:len(source)]
    finally:
        exp.checkpointer.close()
    if jax.process_index() != 0:
        return 0
    accuracy = float(np.mean(out["targets"] == labels))
    if method == "rollout":
        path = os.path.join(workdir, "explain", "rollout.png")
        write_rollout_grid(out, labels, path, exp.task.input_range)
        print(f"strata: attention rollout of {len(labels)} examples of {exp.config.data.eval_split} "
              f"(checkpoint {step}, accuracy {accuracy:.2f}); rows sum to 1 within "
              f"{np.abs(out['row_sums'] - 1).max():.2g}; wrote {path}")
        return 0
    path = os.path.join(workdir, "explain", "attributions.png")
    write_grid(out, labels, path, exp.task.input_range)
    print(f"strata: explained {len(labels)} examples of {exp.config.data.eval_split} (checkpoint {step}, "
          f"accuracy {accuracy:.2f}); IG completeness: |sum IG - (f(x) - f(baseline))| <= "
          f"{np.abs(out['ig_gap']).max():.3g} logits, <= "
          f"{100 * np.max(np.abs(out['ig_gap']) / np.maximum(np.abs(out['ig_change']), 1e-9)):.2g}% of "
          f"|f(x) - f(baseline)| ({s.ig_steps} steps); wrote {path}")
    return 0
