"""Language modelling: next-token cross-entropy, bits per byte, cached sampling.

Serves every autoregressive model that maps (B, T) token ids to (B, T, vocab) logits
and, for sampling, keeps its decoding state in the "cache" collection (GPT's key/value
cache, an RNN's carries):

    logits, upd = model.apply({"params": p, "cache": cache}, tokens, train=False,
                              decode=True, mutable=["cache"])

Examples are windows {"tokens": (T + 1,)}: the model reads tokens[:, :-1] and is scored
on tokens[:, 1:]. With byte tokens (vocab_size=256) one token is one byte, so the loss
in bits per token, loss / ln 2, is bits per byte.

Packed rows of documents (data/packing.py PackedDocuments) add "tokens_segmentation" and
"tokens_positions" (T + 1,): the model gets the first T of each (`segmentation=`,
`segment_positions=`), and target t is scored only where it lies in the same segment as
the token that predicts it: padding (segment 0) and the target across a boundary (a
document's last token, its eos, followed by the next document's first token) are not.
The loss is then the mean over the scored tokens, so a packed row costs what its
documents cost run one by one.

Sampling runs the decode loop on the device (train/tasks/lm_generate.py): the prompt is
prefilled once, then each new token goes alone through the cache inside one jitted loop; a
GPT whose cache (max_len positions) is full slides its window to the last max_len // 2
tokens.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from errors import ConfigError
from train.tasks.lm_generate import generate
from train.tasks.base import (ApplyFn, Batch, EvalSums, Metrics, SampleOutput, Task, TaskContext,
                              masked_mean_parts)

SEED_TOKEN = ord("\n")  # what an empty prompt is conditioned on (not part of the output)


@dataclasses.dataclass
class LanguageModel(Task):
    """Fields (config.task.*): the token feature and the vocabulary.

    Attributes:
      input_key: feature holding (B, T + 1) int token windows.
      vocab_size: number of token ids; 256 means bytes (then the metric is bits_per_byte).
    """
    input_key: str = "tokens"
    vocab_size: int = 256

    def init_args(self, batch: Batch):
        return (batch[self.input_key][:, :-1],), {}

    def _losses(self, apply: ApplyFn, batch: Batch) -> tuple[jax.Array, jax.Array, Any, dict]:
        """(B, T) losses and correct flags, the (B, T) float weights of the scored targets
        (None for windows: all of them), the new model state."""
        tokens = batch[self.input_key]                   # (B, T + 1)
        segments = batch.get(f"{self.input_key}_segmentation")
        packing, weights = {}, None
        if segments is not None:                         # packed documents
            packing = dict(segmentation=segments[:, :-1],
                           segment_positions=batch[f"{self.input_key}_positions"][:, :-1])
            same = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
            weights = same.astype(jnp.float32)           # (B, T)
        logits, new_state = apply(tokens[:, :-1], **packing)  # (B, T, V)
        targets = tokens[:, 1:]                          # (B, T)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B, T)
        correct = jnp.argmax(logits, -1) == targets      # (B, T)
        return losses, correct, weights, new_state

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        losses, correct, weights, new_state = self._losses(apply, batch)
        if weights is None:
            loss, accuracy = losses.mean(), correct.mean()
        else:
            total = jnp.maximum(weights.sum(), 1.0)
            loss, accuracy = jnp.sum(losses * weights) / total, jnp.sum(correct * weights) / total
        return loss, {"loss": loss, "accuracy": accuracy}, new_state

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        losses, correct, weights, _ = self._losses(apply, batch)
        mask = batch["mask"]
        if weights is None:  # every row has T tokens, so the row mean weights tokens equally
            return {"loss": masked_mean_parts(losses, mask),
                    "accuracy": masked_mean_parts(correct, mask)}
        weights = weights * mask[:, None]                # (B, T): scored tokens of real rows
        total = weights.sum()
        return {"loss": (jnp.sum(losses * weights), total),
                "accuracy": (jnp.sum(correct * weights), total)}

    def finalize_eval(self, means: dict[str, float]) -> dict[str, float]:
        """Adds bits_per_byte (bits_per_token if the vocabulary is not bytes)."""
        name = "bits_per_byte" if self.vocab_size == 256 else "bits_per_token"
        return {**means, name: means["loss"] / math.log(2)}

    def sample(self, ctx: TaskContext, settings: Any) -> SampleOutput:
        """`settings.prompt` and `settings.num_tokens` sampled bytes after it, decoded as
        UTF-8 (errors replaced). temperature 0 is greedy; top_k > 0 samples among the k
        likeliest; end_token >= 0 stops after that byte."""
        if self.vocab_size != 256:
            raise ConfigError("sampling decodes bytes; it needs task.vocab_size=256.")
        prompt_ids = list(settings.prompt.encode("utf-8"))
        variables = {k: v for k, v in ctx.variables.items() if k != "cache"}
        out = generate(ctx.model, variables, prompt_ids or [SEED_TOKEN], settings.num_tokens,
                       temperature=settings.temperature, top_k=settings.top_k, rng=ctx.rng,
                       end_id=settings.end_token)
        return SampleOutput(bytes(prompt_ids + out).decode("utf-8", errors="replace"))
