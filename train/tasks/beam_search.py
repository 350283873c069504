"""Greedy and beam-search decoding for encoder-decoder models, pure JAX over the KV cache.

`decode_step(tokens (N, 1), cache) -> (log-probs (N, V), cache)` is all the searches see;
`translate` builds it for `models.transformer.Transformer` (encode once, then one cached
decoder call per token, see that module's docstring) and jits the whole search.

Beam search follows the Flax WMT example / T5X (`decode.beam_search`): K alive hypotheses
per row, each step scores the K*V extensions, keeps the best K that do not end, and moves
those that end (the end-of-sequence token) into a set of K finished ones scored
log p / ((5 + length) / 6) ** alpha (GNMT's length penalty, Wu et al. 2016). Two
choices differ from Flax's: an extension ending in eos counts only when it ranks among
the K best extensions (as in Hugging Face's search), so beam 1 is exactly greedy
decoding when alpha = 0; and the search stops once no alive hypothesis can beat the
finished ones of every row (log p only falls and, for alpha >= 0, the penalty's
denominator is at most that of `max_len`). Rows with nothing finished at `max_len`
return their alive hypotheses, scored the same way.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

NEG_INF = -1.0e7  # "impossible", finite so that sums stay ordered
DecodeStep = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def length_penalty(length: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """GNMT's ((5 + length) / 6) ** alpha; 1 for alpha = 0."""
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def greedy(decode_step: DecodeStep, cache: Any, batch_size: int, max_len: int,
           eos_id: int) -> tuple[jax.Array, jax.Array]:
    """Argmax decoding: ((B, max_len) tokens, eos then zeros after the end; (B,) log p)."""
    def body(carry, i):
        token, cache, done, logp = carry
        log_probs, cache = decode_step(token[:, None], cache)        # (B, V)
        best = jnp.argmax(log_probs, -1).astype(jnp.int32)            # (B,)
        logp = logp + jnp.where(done, 0.0, jnp.max(log_probs, -1))
        out = jnp.where(done, 0, best)
        return (out, cache, done | (best == eos_id), logp), out

    init = (jnp.zeros(batch_size, jnp.int32), cache, jnp.zeros(batch_size, bool),
            jnp.zeros(batch_size, jnp.float32))
    (_, _, _, logp), tokens = jax.lax.scan(body, init, jnp.arange(max_len))
    return tokens.T, logp                                               # (B, T), (B,)


def _gather(tree: Any, index: jax.Array, batch_size: int, beams: int) -> Any:
    """Leaves (B*K, ...) picked by index (B, K') into (B*K', ...); 0-d leaves as they are."""
    rows = jnp.arange(batch_size)[:, None]                              # (B, 1)

    def pick(x):
        if x.ndim == 0:
            return x
        y = x.reshape(batch_size, beams, *x.shape[1:])[rows, index]    # (B, K', ...)
        return y.reshape(-1, *x.shape[1:])
    return jax.tree.map(pick, tree)


def beam_search(decode_step: DecodeStep, cache: Any, batch_size: int, beam_size: int,
                max_len: int, eos_id: int, alpha: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Beam search. `cache` holds B*K rows (row b's beams at b*K .. b*K+K-1, all equal).

    Returns:
      ((B, K, max_len) tokens, best first, each ending in eos (then zeros) unless cut at
      max_len; (B, K) scores: log p / length_penalty).
    """
    B, K, T = batch_size, beam_size, max_len
    alive_seq = jnp.zeros((B, K, T), jnp.int32)
    alive_logp = jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (K - 1), jnp.float32), (B, 1))  # (B, K)
    fin_seq = jnp.zeros((B, K, T), jnp.int32)
    fin_score = jnp.full((B, K), NEG_INF, jnp.float32)

    def not_done(state):
        i, _, alive_logp, _, fin_score, _ = state
        best_alive = alive_logp[:, 0] / length_penalty(jnp.asarray(T), alpha)   # (B,)
        return (i < T) & jnp.any(best_alive > jnp.min(fin_score, axis=1))

    def body(state):
        i, alive_seq, alive_logp, fin_seq, fin_score, cache = state
        last = jnp.where(i == 0, 0, alive_seq[:, :, jnp.maximum(i - 1, 0)])    # (B, K)
        log_probs, cache = decode_step(last.reshape(B * K, 1), cache)           # (B*K, V)
        V = log_probs.shape[-1]
        cand = (alive_logp[:, :, None] + log_probs.reshape(B, K, V)).reshape(B, K * V)
        top_logp, top_idx = jax.lax.top_k(cand, 2 * K)                          # (B, 2K)
        beam, token = top_idx // V, (top_idx % V).astype(jnp.int32)
        seqs = jnp.take_along_axis(alive_seq, beam[:, :, None], axis=1)       # (B, 2K, T)
        seqs = jax.lax.dynamic_update_slice(seqs, token[:, :, None], (0, 0, i))
        ends = token == eos_id
        # Finished: extensions ending in eos among the K best; merged with the old K.
        new_score = jnp.where(ends & (jnp.arange(2 * K) < K)[None],
                              top_logp / length_penalty(i + 1, alpha), NEG_INF)
        all_score = jnp.concatenate([fin_score, new_score], axis=1)           # (B, 3K)
        all_seq = jnp.concatenate([fin_seq, seqs], axis=1)
        fin_score, keep = jax.lax.top_k(all_score, K)
        fin_seq = jnp.take_along_axis(all_seq, keep[:, :, None], axis=1)
        # Alive: the K best extensions that do not end.
        alive_logp, keep = jax.lax.top_k(jnp.where(ends, NEG_INF, top_logp), K)  # (B, K)
        alive_seq = jnp.take_along_axis(seqs, keep[:, :, None], axis=1)
        cache = _gather(cache, jnp.take_along_axis(beam, keep, axis=1), B, K)
        return i + 1, alive_seq, alive_logp, fin_seq, fin_score, cache

    state = (jnp.asarray(0), alive_seq, alive_logp, fin_seq, fin_score, cache)
    _, alive_seq, alive_logp, fin_seq, fin_score, _ = jax.lax.while_loop(not_done, body, state)
    none = jnp.all(fin_score <= NEG_INF / 2, axis=1)                            # (B,)
    alive_score = alive_logp / length_penalty(jnp.asarray(T), alpha)
    seqs = jnp.where(none[:, None, None], alive_seq, fin_seq)
    return seqs, jnp.where(none[:, None], alive_score, fin_score)


# --- the encoder-decoder Transformer -----------------------------------------------------

def _decoder_cache(model, encoded: jax.Array, inputs: jax.Array, max_len: int) -> Any:
    """The all-zero decoder cache for (N, max_len) targets: shapes by jax.eval_shape."""
    targets = jax.ShapeDtypeStruct((inputs.shape[0], max_len), jnp.int32)
    shapes = jax.eval_shape(partial(model.init, train=False, decode=True, method="decode"),
                            jax.random.key(0), encoded, inputs, targets)["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@partial(jax.jit, static_argnames=("model", "beam_size", "max_len", "eos_id"))
def translate(model, params: Any, inputs: jax.Array, alpha: jax.Array, *, beam_size: int,
              max_len: int, eos_id: int) -> tuple[jax.Array, jax.Array]:
    """(B, S) source ids -> ((B, max_len) best target ids, eos-terminated; (B,) scores).
    beam_size 1 is greedy decoding (scores: plain log p)."""
    B = inputs.shape[0]
    if beam_size > 1:
        inputs = jnp.repeat(inputs, beam_size, axis=0)                         # (B*K, S)
    encoded = model.apply({"params": params}, inputs, train=False, method="encode")  # (N, S, E)
    cache = _decoder_cache(model, encoded, inputs, max_len)

    def decode_step(tokens, cache):
        logits, upd = model.apply({"params": params, "cache": cache}, encoded, inputs, tokens,
                                  train=False, decode=True, method="decode", mutable=["cache"])
        return jax.nn.log_softmax(logits[:, -1]), upd["cache"]                  # (N, V)

    if beam_size == 1:
        return greedy(decode_step, cache, B, max_len, eos_id)
    seqs, scores = beam_search(decode_step, cache, B, beam_size, max_len, eos_id, alpha)
    return seqs[:, 0], scores[:, 0]
