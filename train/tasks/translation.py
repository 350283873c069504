"""Translation: label-smoothed cross-entropy with teacher forcing; greedy / beam decoding.

Serves encoder-decoder models called as `apply(inputs, targets, inputs_segmentation=...,
targets_segmentation=..., inputs_positions=..., targets_positions=...)` -> (B, T, V)
logits where logits[:, t] predicts targets[:, t] (models/transformer.py). Batches are
the packed rows of data/packing.py: token id 0 is padding, and only targets != 0 are
scored. The loss is the Flax WMT example's: cross-entropy against targets smoothed to
1 - s on the right token and s / (V - 1) elsewhere, minus that distribution's entropy
(so a perfect model scores 0), averaged over real target tokens.

Sampling translates `config.sample.prompt` with `sample.beam_size` (1 = greedy),
`sample.length_penalty` and `sample.max_decode_len` (train/tasks/beam_search.py); the
text goes through the tokenizer the data were made with (`ctx.data_info.tokenizer`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError
from train.tasks.base import ApplyFn, Batch, EvalSums, Metrics, SampleOutput, Task, TaskContext

SEGMENT_KEYS = ("inputs_segmentation", "targets_segmentation", "inputs_positions", "targets_positions")


@dataclasses.dataclass
class Translation(Task):
    """Fields (config.task.*).

    Attributes:
      vocab_size: token ids (the tokenizer's; 0 is padding).
      label_smoothing: s, the probability mass spread over the other tokens.
    """
    vocab_size: int = 258
    label_smoothing: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {self.label_smoothing}.")

    def init_args(self, batch: Batch):
        return (batch["inputs"], batch["targets"]), {}

    def _token_losses(self, apply: ApplyFn, batch: Batch) -> tuple[jax.Array, ...]:
        """(B, T) smoothed losses, plain negative log-likelihoods, correct flags, weights."""
        packing = {k: batch[k] for k in SEGMENT_KEYS if k in batch}
        targets = batch["targets"]                                      # (B, T)
        logits, new_state = apply(batch["inputs"], targets, **packing)  # (B, T, V)
        log_probs = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # (B, T)
        s, V = self.label_smoothing, logits.shape[-1]
        if s:
            confidence, low = 1.0 - s, s / (V - 1)
            constant = -(confidence * math.log(confidence) + (V - 1) * low * math.log(low + 1e-20))
            smoothed = confidence * nll - low * (jnp.sum(log_probs, -1) + nll) - constant
        else:
            smoothed = nll
        weights = (targets > 0).astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return smoothed, nll, correct, weights, new_state

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        smoothed, nll, correct, weights, new_state = self._token_losses(apply, batch)
        total = jnp.maximum(weights.sum(), 1.0)
        loss = jnp.sum(smoothed * weights) / total
        return loss, {"loss": loss, "nll": jnp.sum(nll * weights) / total,
                      "accuracy": jnp.sum(correct * weights) / total}, new_state

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        """Sums over real target tokens of real rows, each with the token count."""
        smoothed, nll, correct, weights, _ = self._token_losses(apply, batch)
        weights = weights * batch["mask"][:, None]                      # (B, T)
        total = weights.sum()
        return {"loss": (jnp.sum(smoothed * weights), total), "nll": (jnp.sum(nll * weights), total),
                "accuracy": (jnp.sum(correct * weights), total)}

    def finalize_eval(self, means: dict[str, float]) -> dict[str, float]:
        """Adds perplexity = exp(nll per target token)."""
        return {**means, "perplexity": math.exp(min(means["nll"], 50.0))}

    # --- decoding ---------------------------------------------------------------------

    def check_sampling(self, settings: Any) -> None:
        """beam_size >= 1, length_penalty >= 0, max_decode_len >= 0."""
        if settings.beam_size < 1:
            raise ConfigError(f"config.sample.beam_size must be >= 1, got {settings.beam_size}.")
        if settings.length_penalty < 0:
            raise ConfigError(f"config.sample.length_penalty must be >= 0, got {settings.length_penalty}.")
        if settings.max_decode_len < 0:
            raise ConfigError(f"config.sample.max_decode_len must be >= 0, got {settings.max_decode_len}.")

    def translate_ids(self, model, params: Any, inputs: np.ndarray, settings: Any,
                      eos_id: int) -> np.ndarray:
        """(B, S) source ids -> (B, T) target ids (eos-terminated) as `settings` says."""
        from train.tasks.beam_search import translate
        self.check_sampling(settings)
        max_len = settings.max_decode_len or model.max_len
        if max_len > model.max_len:
            raise ConfigError(f"config.sample.max_decode_len {max_len} exceeds model.max_len "
                              f"{model.max_len}.")
        tokens, _ = translate(model, params, jnp.asarray(inputs, jnp.int32),
                              jnp.float32(settings.length_penalty), beam_size=int(settings.beam_size),
                              max_len=int(max_len), eos_id=int(eos_id))
        return np.asarray(jax.device_get(tokens))

    def sample(self, ctx: TaskContext, settings: Any) -> SampleOutput:
        """The translation of `settings.prompt`."""
        tokenizer = getattr(ctx.data_info, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError("translation sampling needs tokenised text data (data.targets_key).")
        ids = tokenizer.encode(settings.prompt)
        if not len(ids):
            raise ConfigError(f"config.sample.prompt {settings.prompt!r} encodes to no tokens; "
                              "give the text to translate.")
        ids = np.append(ids, tokenizer.eos_id)[None, :ctx.model.max_len].astype(np.int32)  # (1, S)
        out = self.translate_ids(ctx.model, ctx.variables["params"], ids, settings, tokenizer.eos_id)
        return SampleOutput(tokenizer.decode(out[0]))
