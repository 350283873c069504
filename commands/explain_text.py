"""`run.py explain` on a byte language model (text_gpt, text_lstm): which tokens of a prompt
drive the model's next-token prediction, and which surprise it.

    python run.py explain --workdir runs/text_gpt --config.explain.prompt="def main():"

For the prompt, the logit of the predicted next byte at the last position is attributed to
each prompt byte by gradient x input and Integrated Gradients on the token embeddings
(train/limits/attributions.py `token_attributions`), and each byte's loss (bits, given
the bytes before it) is measured. Writes DIR/explain/tokens.html (each byte shaded by IG:
red raises the prediction, blue lowers it; and by its loss) and prints the same on the
terminal (ANSI colours) with a table.
"""
from __future__ import annotations

import html
import math
import os

import numpy as np


def _explain_tokens(state, tokens, *, model, task, steps: int):
    """Jitted: per-token attributions of the predicted next token, and per-token losses."""
    import jax
    import jax.numpy as jnp
    from train import step as step_lib
    from train.limits import attributions as attr
    apply = step_lib.eval_apply(model, state)
    logits_fn = lambda t: apply(t)[0]  # noqa: E731  (B, T) -> (B, T, V)
    logits = logits_fn(tokens).astype(jnp.float32)
    target = jnp.argmax(logits[:, -1], -1)
    out = attr.token_attributions(logits_fn, tokens, target, steps=steps)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)  # position t predicts token t + 1
    loss = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0] / math.log(2)  # (B, T-1) bits
    return {**out, "target": target, "loss_bits": loss}


def _shade(value: float, scale: float, rgb: tuple[int, int, int]) -> str:
    a = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"


def _show(byte: int) -> str:
    """A byte as visible text: control bytes as escapes."""
    ch = chr(byte) if byte < 128 else f"\\x{byte:02x}"
    return {"\n": "\u23ce", "\t": "\u21e5", " ": "\u00a0"}.get(ch, ch if ch.isprintable() else repr(ch)[1:-1])


def write_html(tokens: list[int], ig: np.ndarray, loss: np.ndarray, predicted: int, path: str,
               title: str) -> None:
    """Two rows of the prompt's bytes: shaded by IG (red +, blue -) and by loss (orange)."""
    scale, top = float(np.abs(ig).max()), float(np.max(loss)) if len(loss) else 0.0
    rows = []
    for name, colour in (("attribution (IG)", lambda i: _shade(ig[i], scale, (220, 40, 40) if ig[i] > 0 else (40, 80, 220))),
                         ("loss (bits)", lambda i: _shade(loss[i - 1], top, (255, 140, 0)) if i else "white")):
        spans = "".join(
            f'<span style="background:{colour(i)}" title="{html.escape(repr(chr(t)))}: IG {ig[i]:+.3f}'
            f'{f", loss {loss[i - 1]:.2f} bits" if i else ""}">{html.escape(_show(t))}</span>'
            for i, t in enumerate(tokens))
        rows.append(f"<p><b>{name}</b><br><code style='font-size:18px'>{spans}</code></p>")
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h3>{html.escape(title)}</h3><p>predicted next byte: <code>{html.escape(repr(chr(predicted)))}</code>"
            f"</p>{''.join(rows)}<p>red: raises the predicted byte's logit, blue: lowers it; "
            f"orange: the model's loss on that byte given the ones before it.</p>")
    from train import files  # a gs:// workdir too
    files.makedirs(os.path.dirname(files.absolute(path)))
    with files.open_write(path) as f:
        f.write(page)


def terminal(tokens: list[int], ig: np.ndarray, gxi: np.ndarray, loss: np.ndarray) -> str:
    """The prompt in ANSI colours (background red/blue by IG), then a table per byte."""
    scale = float(np.abs(ig).max()) or 1.0
    coloured = []
    for t, v in zip(tokens, ig):
        level = min(int(abs(v) / scale * 5), 5)  # 6 levels of the 6x6x6 colour cube
        code = 16 + (36 * 5 + 6 * (5 - level) + (5 - level) if v > 0 else 36 * (5 - level) + 6 * (5 - level) + 5)
        coloured.append(f"\x1b[48;5;{code}m\x1b[30m{_show(t)}\x1b[0m")
    lines = ["".join(coloured), "", "| pos | byte | IG | grad x input | loss (bits) |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {i} | {_show(t)!s} | {ig[i]:+.3f} | {gxi[i]:+.3f} | {'-' if i == 0 else f'{loss[i - 1]:.2f}'} |"
              for i, t in enumerate(tokens)]
    return "\n".join(lines)


def explain_tokens(exp, state, step: int, workdir: str, settings) -> int:
    """The token view of `settings.prompt` into DIR/explain/tokens.html and stdout."""
    import jax
    import jax.numpy as jnp
    from functools import partial
    from errors import ConfigError
    prompt = list(settings.prompt.encode("utf-8"))
    if len(prompt) < 2:
        raise ConfigError("explain on a language model needs --config.explain.prompt of 2 bytes or more.")
    max_len = getattr(exp.model, "max_len", 0)
    if max_len and len(prompt) > max_len:
        raise ConfigError(f"the prompt has {len(prompt)} bytes, more than the model's context of {max_len}.")
    fn = jax.jit(partial(_explain_tokens, model=exp.model, task=exp.task, steps=settings.ig_steps))
    out = {k: np.asarray(jax.device_get(v))[0] for k, v in fn(state, jnp.asarray([prompt], jnp.int32)).items()}
    if jax.process_index() != 0:
        return 0
    path = os.path.join(workdir, "explain", "tokens.html")
    predicted = int(out["target"])
    write_html(prompt, out["ig"], out["loss_bits"], predicted, path,
               f"{os.path.basename(os.path.abspath(workdir))} (checkpoint {step})")
    gap = float(out["ig"].sum() - (out["logit"] - out["baseline_logit"]))
    print(terminal(prompt, out["ig"], out["grad_x_input"], out["loss_bits"]))
    print(f"\nstrata: predicted next byte {chr(predicted)!r} (logit {float(out['logit']):.2f}); mean loss "
          f"{float(out['loss_bits'].mean()):.2f} bits/byte; IG completeness gap {gap:+.3g} logits "
          f"({settings.ig_steps} steps); wrote {path}")
    return 0
