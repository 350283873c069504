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

Sampling feeds the prompt once, then each new token alone through the cache (`advance`,
jitted once per input length); a GPT whose cache (max_len positions) is full slides its
window to the last max_len // 2 tokens (see `generate`).
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from errors import ConfigError
from models.decoding import init_cache
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
        likeliest."""
        if self.vocab_size != 256:
            raise ConfigError("sampling decodes bytes; it needs task.vocab_size=256.")
        prompt_ids = list(settings.prompt.encode("utf-8"))
        variables = {k: v for k, v in ctx.variables.items() if k != "cache"}
        out = generate(ctx.model, variables, prompt_ids or [SEED_TOKEN], settings.num_tokens,
                       temperature=settings.temperature, top_k=settings.top_k, rng=ctx.rng)
        return SampleOutput(bytes(prompt_ids + out).decode("utf-8", errors="replace"))


# --- cached decoding -----------------------------------------------------------------

@partial(jax.jit, static_argnames=("model", "top_k"))
def advance(model, variables: dict, cache: Any, tokens: jax.Array, key: jax.Array,
            temperature: jax.Array, top_k: int = 0) -> tuple[Any, jax.Array]:
    """Feeds tokens (B, T) through the cache, returns (new cache, next token (B,)).

    One compilation per distinct T: 1 for every generated token, plus the prompt's and
    the sliding re-prefill's lengths. temperature <= 0 picks the argmax."""
    logits, updated = model.apply({**variables, "cache": cache}, tokens, train=False,
                                  decode=True, mutable=["cache"])
    logits = logits[:, -1]                                          # (B, V)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    if top_k and top_k < scaled.shape[-1]:
        kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]               # (B, 1)
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    sampled = jax.random.categorical(key, scaled, axis=-1)         # (B,)
    picked = jnp.where(temperature > 0, sampled, jnp.argmax(logits, -1))
    return updated["cache"], picked.astype(jnp.int32)


def generate(model, variables: dict, context_ids: list[int], num_tokens: int, *,
             temperature: float, top_k: int, rng: jax.Array) -> list[int]:
    """`num_tokens` ids continuing `context_ids`: one cached one-token model call per
    token, the prefix is never recomputed.

    A model with `max_len` (GPT) has a cache of that many positions. When it is full
    the window slides: a fresh cache is prefilled with the last max_len // 2 tokens and
    generation goes on, so any length can be sampled at an amortised O(max_len) cost per
    token, always conditioned on at least max_len // 2 tokens. A prompt longer than
    max_len - 1 is conditioned on its last max_len // 2 tokens. Models without
    `max_len` (RNNs) carry their state forever.
    """
    if num_tokens <= 0:
        return []
    context = getattr(model, "max_len", None)
    keep = max(context // 2, 1) if context else None
    history = list(context_ids)
    temperature = jnp.float32(temperature)

    def prefill(ids: list[int], step: int):
        return advance(model, variables, init_cache(model), jnp.asarray([ids], jnp.int32),
                       jax.random.fold_in(rng, step), temperature, top_k)

    fed = history if not context or len(history) < context else history[-keep:]
    cache, token = prefill(fed, 0)
    used = len(fed)
    out = []
    for i in range(1, num_tokens + 1):
        out.append(int(token[0]))
        history.append(out[-1])
        if i == num_tokens:
            break
        if context and used >= context:  # no room for one more key/value: slide
            cache, token = prefill(history[-keep:], i)
            used = keep
        else:
            cache, token = advance(model, variables, cache, jnp.asarray([[out[-1]]], jnp.int32),
                                   jax.random.fold_in(rng, i), temperature, top_k)
            used += 1
    return out
