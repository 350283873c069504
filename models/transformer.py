"""The encoder-decoder Transformer (Vaswani et al. 2017), laid out as the Flax WMT example.

    Transformer(vocab_size=37000)        # "base": 6+6 layers, width 512, 8 heads, MLP 2048, 63.0M params
    Transformer(vocab_size=37000, width=1024, num_heads=16, mlp_dim=4096, dropout=0.3)  # "big"
    Transformer(pre_ln=True)             # LayerNorm before each sub-layer, plus a final one

One embedding table is shared by the source, the target and the output layer: inputs are
`embedding[token] * sqrt(width)` plus fixed sinusoidal positions, and the logits are
`x @ embedding.T` (the paper's section 3.4). Every sub-layer (self-attention, the decoder's
attention over the encoder output, the ReLU MLP) is wrapped as `LayerNorm(x + dropout(f(x)))`
(post-LN, the paper's) or `x + dropout(f(LayerNorm(x)))` (`pre_ln=True`); dropout also
applies to the embedded inputs. Token id 0 is padding: no query or key at a padding
position takes part in attention. With segment ids (packed sequences: several examples in
one row, segments numbered from 1) attention never crosses a segment boundary and positions
restart in each segment when `*_positions` are passed.

Teacher forcing (training, scoring): `model.apply(v, inputs, targets, train=...)` with
`targets` the target tokens y_1..y_T; the decoder reads them shifted right by one (a 0 as
"begin" first, and first in each packed segment), so `logits[:, t]` predicts `targets[:, t]`
and the loss is cross-entropy against `targets` where `targets > 0`.

Decoding feeds the decoder's own input stream one token at a time, starting with 0:

    encoded = model.apply(v, inputs, train=False, method="encode")              # (B, S, E)
    cache = model.init(rng, encoded, inputs, jnp.zeros((B, T_max), jnp.int32), train=False,
                       decode=True, method="decode")["cache"]                   # zeros
    logits, upd = model.apply({**v, "cache": cache}, encoded, inputs, tokens, train=False,
                              decode=True, method="decode", mutable=["cache"])  # tokens: (B, 1)
    cache = upd["cache"]

Each decoder self-attention writes its key and value at the cache index and attends over
the positions written so far; T_max must stay within `max_len` (not checked: it is traced).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError
from models.attention import attention
from models.layers import LoRADense, check_lora, layer_norm, lora_args, zeros

xavier = nn.initializers.xavier_uniform()


def sinusoids(length: int, width: int) -> np.ndarray:
    """Fixed position encodings (length, width): sin(p / 10000^(2i/width)) in the first
    half of the features, cos in the second (tensor2tensor's layout of the paper's PE)."""
    half = width // 2
    freqs = np.exp(-math.log(10_000.0) * np.arange(half) / half)        # (width/2,)
    angles = np.arange(length)[:, None] * freqs[None, :]                # (length, width/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def shift_right(targets: jnp.ndarray, segmentation: jnp.ndarray | None = None) -> jnp.ndarray:
    """(B, T) targets -> decoder inputs (B, T): 0 first, then targets[:, :-1]; with segment
    ids the first token of every segment is 0 too (it never sees the previous segment)."""
    shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
    if segmentation is not None:
        same = segmentation == jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
        shifted = jnp.where(same, shifted, 0)
    return shifted


def attention_mask(q_tokens: jnp.ndarray, k_tokens: jnp.ndarray, q_segments: jnp.ndarray | None,
                   k_segments: jnp.ndarray | None, causal: bool = False) -> jnp.ndarray:
    """(B, T) and (B, S) token ids (0 = padding) -> (B, 1, T, S) bool: True = may attend."""
    mask = (q_tokens > 0)[:, :, None] & (k_tokens > 0)[:, None, :]      # (B, T, S)
    if q_segments is not None:
        mask &= q_segments[:, :, None] == k_segments[:, None, :]
    if causal:
        mask &= jnp.tril(jnp.ones((q_tokens.shape[1], k_tokens.shape[1]), bool))[None]
    return mask[:, None]


class DecodeIndex(nn.Module):
    """How many target positions the decode cache holds; each call but `init`'s advances it."""

    @nn.compact
    def __call__(self, length: int) -> jnp.ndarray:
        """Returns the index () before this call's `length` tokens."""
        initialized = self.has_variable("cache", "index")
        index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
        start = index.value
        if initialized:
            index.value = start + length
        return start


class Attention(nn.Module):
    """Multi-head attention of x over `memory`; given `cache_start`, a self-attention that
    keeps its keys and values in the "cache" collection (x is then the memory)."""
    num_heads: int
    dtype: Any = jnp.float32
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_targets: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, memory: jnp.ndarray, mask: jnp.ndarray | None,
                 cache_start: jnp.ndarray | None = None) -> jnp.ndarray:
        """x: (B, T, E), memory: (B, S, E), mask: (B, 1, T, S) or None -> (B, T, E).

        cache_start: () position of x[:, 0] when decoding; x's keys and values are written
        there and x attends to every cached position up to its own (`mask` is ignored)."""
        width = x.shape[-1]
        head_dim = width // self.num_heads

        def lora(role: str) -> dict:
            return lora_args(self.lora_rank, self.lora_alpha, self.lora_targets, role)

        def project(name: str, y: jnp.ndarray) -> jnp.ndarray:  # (B, L, E) -> (B, L, H, D)
            return LoRADense(features=(self.num_heads, head_dim), use_bias=False,
                             dtype=self.dtype, name=name, kernel_init=nn.with_logical_partitioning(
                                 xavier, ("embed", "heads", "kv")), **lora(name))(y)

        q, k, v = project("query", x), project("key", memory), project("value", memory)
        if cache_start is not None:
            # `init` creates the cache (zeros, sized by the (B, T_max) init input) and attends
            # with `mask` as usual; later calls write into it.
            initialized = self.has_variable("cache", "cached_key")
            cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
            cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
            if initialized:
                k = jax.lax.dynamic_update_slice(cached_k.value, k, (0, cache_start, 0, 0))
                v = jax.lax.dynamic_update_slice(cached_v.value, v, (0, cache_start, 0, 0))
                cached_k.value, cached_v.value = k, v                          # (B, T_max, H, D)
                q_pos = cache_start + jnp.arange(x.shape[1])                   # (T,)
                mask = (jnp.arange(k.shape[1])[None, :] <= q_pos[:, None])[None, None]
                # (1, 1, T, T_max): each query sees the cached positions up to its own
        y = attention(q, k, v, mask=mask)                                     # (B, T, H, D)
        return LoRADense(features=width, axis=(-2, -1), use_bias=False, dtype=self.dtype,
                         name="out", kernel_init=nn.with_logical_partitioning(
                             xavier, ("heads", "kv", "embed")), **lora("out"))(y)  # (B, T, E)


class Layer(nn.Module):
    """One encoder layer (self-attention, MLP) or, with `cross=True`, one decoder layer
    (self-attention, attention over the encoder output, MLP)."""
    num_heads: int
    mlp_dim: int
    dropout: float
    pre_ln: bool
    cross: bool = False
    dtype: Any = jnp.float32
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_targets: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, self_mask: jnp.ndarray | None, *, train: bool,
                 encoded: jnp.ndarray | None = None, cross_mask: jnp.ndarray | None = None,
                 cache_start: jnp.ndarray | None = None) -> jnp.ndarray:
        """x: (B, T, E), encoded: (B, S, E), masks: (B, 1, T, T) and (B, 1, T, S) -> (B, T, E);
        cache_start: see `Attention` (decoding)."""
        width = x.shape[-1]
        drop = nn.Dropout(rate=self.dropout, deterministic=not train)

        def sublayer(name: str, f: Callable[[jnp.ndarray], jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
            norm = layer_norm(self.dtype, f"ln_{name}", epsilon=1e-6)
            if self.pre_ln:
                return x + drop(f(norm(x)))
            return norm(x + drop(f(x)))

        lora = dict(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha, lora_targets=self.lora_targets)

        def mlp(y: jnp.ndarray) -> jnp.ndarray:
            y = LoRADense(features=self.mlp_dim, dtype=self.dtype, name="mlp_in",
                          kernel_init=nn.with_logical_partitioning(xavier, ("embed", "mlp")),
                          bias_init=zeros(("mlp",)), **lora_args(**lora, role="mlp_in"))(y)
            return LoRADense(features=width, dtype=self.dtype, name="mlp_out",
                             kernel_init=nn.with_logical_partitioning(xavier, ("mlp", "embed")),
                             bias_init=zeros(("embed",)),
                             **lora_args(**lora, role="mlp_out"))(nn.relu(y))  # (B, T, mlp_dim) -> (B, T, E)

        self_attn = Attention(num_heads=self.num_heads, dtype=self.dtype, name="self_attn", **lora)
        x = sublayer("self_attn", lambda y: self_attn(y, y, self_mask, cache_start), x)
        if self.cross:
            cross_attn = Attention(num_heads=self.num_heads, dtype=self.dtype, name="cross_attn", **lora)
            x = sublayer("cross_attn", lambda y: cross_attn(y, encoded, cross_mask), x)
        return sublayer("mlp", mlp, x)


class Transformer(nn.Module):
    """An encoder-decoder Transformer over one shared token vocabulary.

    Attributes:
      vocab_size: number of token ids, shared by source and target; 0 is padding.
      num_layers: encoder layers, and as many decoder layers.
      width: model dimension d_model; num_heads must divide it.
      num_heads: attention heads per attention sub-layer.
      mlp_dim: hidden size d_ff of the ReLU MLP.
      dropout: rate on the embedded inputs and on every sub-layer's output, used when
        `train=True` (draws from the "dropout" rng).
      pre_ln: LayerNorm before each sub-layer and once at the end of each stack, instead
        of after each residual sum (the paper's post-LN).
      max_len: longest source or target sequence (the sinusoid table's rows).
      dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32 and the
        logits are returned as float32.
      lora_rank, lora_alpha, lora_targets: LoRA adapters as in `models.gpt.GPT`, on every
        attention's (self and cross) query, key, value, out and every MLP's mlp_in, mlp_out.
    """
    vocab_size: int = 37000
    num_layers: int = 6
    width: int = 512
    num_heads: int = 8
    mlp_dim: int = 2048
    dropout: float = 0.1
    pre_ln: bool = False
    max_len: int = 256
    dtype: str = "float32"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("query", "value")

    def setup(self):
        if self.width % self.num_heads:
            raise ConfigError(f"Transformer width {self.width} is not divisible by num_heads "
                              f"{self.num_heads}; change one of them.")
        if self.width % 2:
            raise ConfigError(f"Transformer width must be even (sin and cos halves), got {self.width}.")
        dtype = jnp.dtype(self.dtype)
        self.embed = nn.Embed(num_embeddings=self.vocab_size, features=self.width, dtype=dtype,
                              embedding_init=nn.with_logical_partitioning(
                                  nn.initializers.normal(self.width ** -0.5), ("vocab", "embed")))
        check_lora(self.lora_rank, self.lora_alpha, self.lora_targets)
        layer = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                     pre_ln=self.pre_ln, dtype=dtype, lora_rank=self.lora_rank,
                     lora_alpha=self.lora_alpha, lora_targets=tuple(self.lora_targets))
        self.encoder = [Layer(**layer) for _ in range(self.num_layers)]         # encoder_0, ...
        self.decoder = [Layer(**layer, cross=True) for _ in range(self.num_layers)]
        if self.pre_ln:
            self.encoder_ln = layer_norm(dtype, None, epsilon=1e-6)
            self.decoder_ln = layer_norm(dtype, None, epsilon=1e-6)
        self.drop = nn.Dropout(rate=self.dropout)
        self.decode_index = DecodeIndex()

    def _embed(self, tokens: jnp.ndarray, positions: jnp.ndarray, train: bool) -> jnp.ndarray:
        """(B, T) ids, (T,) or (B, T) positions -> (B, T, E) scaled embeddings + sinusoids."""
        if tokens.shape[1] > self.max_len:
            raise ConfigError(f"sequence length {tokens.shape[1]} exceeds Transformer max_len "
                              f"{self.max_len}; raise max_len or shorten the data.")
        x = self.embed(tokens) * math.sqrt(self.width)                         # (B, T, E)
        pos = jnp.take(jnp.asarray(sinusoids(self.max_len, self.width)), positions, axis=0)
        pos = pos[None] if pos.ndim == 2 else pos                              # (1 or B, T, E)
        return self.drop(x + pos.astype(x.dtype), deterministic=not train)

    def encode(self, inputs: jnp.ndarray, *, train: bool, inputs_segmentation: jnp.ndarray | None = None,
               inputs_positions: jnp.ndarray | None = None) -> jnp.ndarray:
        """inputs: (B, S) source ids -> (B, S, E) encoder output."""
        positions = jnp.arange(inputs.shape[1]) if inputs_positions is None else inputs_positions
        x = self._embed(inputs, positions, train)
        mask = attention_mask(inputs, inputs, inputs_segmentation, inputs_segmentation)  # (B, 1, S, S)
        for layer in self.encoder:
            x = layer(x, mask, train=train)
        return self.encoder_ln(x) if self.pre_ln else x

    def decode(self, encoded: jnp.ndarray, inputs: jnp.ndarray, targets: jnp.ndarray, *, train: bool,
               decode: bool = False, inputs_segmentation: jnp.ndarray | None = None,
               targets_segmentation: jnp.ndarray | None = None,
               targets_positions: jnp.ndarray | None = None) -> jnp.ndarray:
        """encoded: (B, S, E), inputs: (B, S) source ids (for their padding and segments),
        targets: (B, T) -> (B, T, vocab_size) float32 logits.

        decode=False: `targets` are the target tokens, shifted right here (teacher forcing).
        decode=True: `targets` are the decoder's next input tokens (0 first), fed as they
        are through the "cache" collection (pass `mutable=["cache"]`); no packing.
        """
        cache_start = None
        if decode:
            cache_start = self.decode_index(targets.shape[1])                  # ()
            x = self._embed(targets, cache_start + jnp.arange(targets.shape[1]), train)
            fed = jnp.ones_like(targets)  # every fed token is real, 0 ("begin") included
            self_mask = attention_mask(fed, fed, None, None, causal=True)       # used by `init` only
            cross_mask = attention_mask(fed, inputs, None, None)                # (B, 1, T, S)
        else:
            positions = jnp.arange(targets.shape[1]) if targets_positions is None else targets_positions
            x = self._embed(shift_right(targets, targets_segmentation), positions, train)
            self_mask = attention_mask(targets, targets, targets_segmentation, targets_segmentation,
                                       causal=True)                            # (B, 1, T, T)
            cross_mask = attention_mask(targets, inputs, targets_segmentation, inputs_segmentation)
        for layer in self.decoder:
            x = layer(x, self_mask, train=train, encoded=encoded, cross_mask=cross_mask,
                      cache_start=cache_start)
        if self.pre_ln:
            x = self.decoder_ln(x)
        return self.embed.attend(x).astype(jnp.float32)                       # (B, T, V)

    def __call__(self, inputs: jnp.ndarray, targets: jnp.ndarray, *, train: bool,
                 inputs_segmentation: jnp.ndarray | None = None,
                 targets_segmentation: jnp.ndarray | None = None,
                 inputs_positions: jnp.ndarray | None = None,
                 targets_positions: jnp.ndarray | None = None) -> jnp.ndarray:
        """inputs: (B, S) source ids, targets: (B, T) target ids (0 = padding) ->
        (B, T, vocab_size) float32 logits; logits[:, t] predicts targets[:, t]."""
        encoded = self.encode(inputs, train=train, inputs_segmentation=inputs_segmentation,
                              inputs_positions=inputs_positions)
        return self.decode(encoded, inputs, targets, train=train,
                           inputs_segmentation=inputs_segmentation,
                           targets_segmentation=targets_segmentation,
                           targets_positions=targets_positions)
