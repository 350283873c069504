"""GPT: a decoder-only Transformer language model (Radford et al. 2019; nanoGPT's layout).

    GPT()                                           # 10.9M params: 6 layers, width 384, 6 heads
    GPT(num_layers=12, num_heads=12, width=768, vocab_size=50257, max_len=1024)  # GPT-2 small
    GPT(positions="rotary", tie_embeddings=True)    # RoPE (Su et al. 2021), shared in/out embedding

Pre-LayerNorm blocks (causal self-attention, then a GELU MLP), a final LayerNorm and a
linear head; attention is `models.attention.attention` (`jax.nn.dot_product_attention`
on accelerators, so a backend may pick a fused kernel). There is no dropout on the attention probabilities (that function has none);
`dropout` applies to the embeddings and to each residual branch.

Sampling uses a key/value cache in the `cache` collection (the flax lm1b example's scheme):

    cache = init_cache(model, batch_size)                        # models/decoding.py
    logits, vars = model.apply({"params": params, "cache": cache}, tokens, train=False,
                               decode=True, mutable=["cache"])   # tokens: (B, 1) or a (B, T) prompt
    cache = vars["cache"]

Packed rows of several documents: `model.apply(v, tokens, train=..., segmentation=seg,
segment_positions=pos)` (block-diagonal causal attention, positions restarting per
document, for both position schemes).

Each decode call writes its keys and values at the cache's index and advances it, so a
step costs O(max_len) rather than recomputing the whole prefix. Positions in decode mode
come from that index; it must stay below `max_len` (not checked: it is traced).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from errors import ConfigError
from models.attention import attention
from models.decoding import init_cache  # noqa: F401  (benchmarks/sampling.py imports it from here)
from models.layers import layer_norm, normal, zeros

POSITIONS = ("learned", "rotary")


def rotary(x: jnp.ndarray, positions: jnp.ndarray, theta: float = 10_000.0) -> jnp.ndarray:
    """Rotates feature pairs (i, i + D/2) of x by angle position * theta^(-2i/D) (RoPE).

    Args:
      x: (B, T, H, D) queries or keys; D must be even.
      positions: (T,) integer positions of the T tokens, or (B, T) per row (packed rows).
    Returns:
      x rotated, same shape and dtype.
    """
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)         # (D/2,)
    freqs = jnp.expand_dims(freqs, tuple(range(positions.ndim)))           # (1, [1,] D/2)
    angles = positions.astype(jnp.float32)[..., None] * freqs              # ([B,] T, D/2)
    if angles.ndim == 2:
        angles = angles[None]                                              # (1, T, D/2)
    sin = jnp.sin(angles)[:, :, None, :]                                   # (1 or B, T, 1, D/2)
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, with a key/value cache when `decode=True`."""
    num_heads: int
    max_len: int
    rotary: bool
    out_stddev: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, positions: jnp.ndarray, mask: jnp.ndarray | None,
                 decode: bool) -> jnp.ndarray:
        """x: (B, T, E), positions: (T,) or (B, T), mask: None or (B, 1, T, T) bool, True =
        may attend (combined with the causal mask) -> (B, T, E)."""
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        # One projection for queries, keys and values (nanoGPT's c_attn): one larger matmul
        # instead of three, and one gradient for x instead of three to add up.
        qkv = nn.DenseGeneral(features=(3, self.num_heads, head_dim), dtype=self.dtype, name="qkv",
                              kernel_init=normal(0.02, ("embed", None, "heads", "kv")),
                              bias_init=zeros((None, "heads", "kv")))(x)  # (B, T, 3, H, D)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, D) each
        if self.rotary:
            q, k = rotary(q, positions), rotary(k, positions)

        if decode:
            # During `init` the cache does not exist yet: create it (zeros, sized by the
            # (B, max_len) init input) and attend causally over the input as usual.
            initialized = self.has_variable("cache", "cached_key")
            cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
            cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
            if initialized:
                start = positions[0]
                k = jax.lax.dynamic_update_slice(cached_k.value, k, (0, start, 0, 0))  # (B, S, H, D)
                v = jax.lax.dynamic_update_slice(cached_v.value, v, (0, start, 0, 0))
                cached_k.value, cached_v.value = k, v
                key_positions = jnp.arange(k.shape[1])                            # (S,)
                mask = key_positions[None, :] <= positions[:, None]               # (T, S)
                y = attention(q, k, v, mask=mask[None, None])  # (B, T, H, D)
            else:
                y = attention(q, k, v, is_causal=True)
        else:
            y = attention(q, k, v, mask=mask, is_causal=True)  # (B, T, H, D)

        return nn.DenseGeneral(features=width, axis=(-2, -1), dtype=self.dtype, name="out",
                               kernel_init=normal(self.out_stddev, ("heads", "kv", "embed")),
                               bias_init=zeros(("embed",)))(y)  # (B, T, E)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""
    num_heads: int
    mlp_dim: int
    max_len: int
    rotary: bool
    out_stddev: float
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    gelu_approximate: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, positions: jnp.ndarray, mask: jnp.ndarray | None,
                 train: bool, decode: bool) -> jnp.ndarray:
        """x: (B, T, E), positions: (T,) or (B, T), mask: see CausalSelfAttention -> (B, T, E)."""
        width = x.shape[-1]
        drop = nn.Dropout(rate=self.dropout, deterministic=not train)
        y = layer_norm(self.dtype, "ln_attn", epsilon=self.layer_norm_epsilon)(x)
        y = CausalSelfAttention(num_heads=self.num_heads, max_len=self.max_len, rotary=self.rotary,
                                out_stddev=self.out_stddev, dtype=self.dtype,
                                name="attn")(y, positions, mask, decode)
        x = x + drop(y)
        y = layer_norm(self.dtype, "ln_mlp", epsilon=self.layer_norm_epsilon)(x)
        y = nn.Dense(features=self.mlp_dim, dtype=self.dtype, name="mlp_in",
                     kernel_init=normal(0.02, ("embed", "mlp")), bias_init=zeros(("mlp",)))(y)
        y = nn.gelu(y, approximate=self.gelu_approximate)  # (B, T, mlp_dim)
        y = nn.Dense(features=width, dtype=self.dtype, name="mlp_out",
                     kernel_init=normal(self.out_stddev, ("mlp", "embed")),
                     bias_init=zeros(("embed",)))(y)
        return x + drop(y)


class GPT(nn.Module):
    """A decoder-only Transformer over a token vocabulary.

    Attributes:
      vocab_size: number of token ids (256 for bytes).
      num_layers: number of Transformer blocks.
      num_heads: attention heads per block; must divide `width`.
      width: embedding (model) dimension.
      mlp_ratio: MLP hidden size as a multiple of `width`.
      max_len: longest sequence; also the length of the decode cache.
      positions: "learned" (an embedding table of `max_len` rows) or "rotary" (RoPE on
        queries and keys, no parameters).
      tie_embeddings: if True the output head is the transposed token embedding.
      dropout: rate on the embeddings and on each residual branch, used when `train=True`
        (draws from the "dropout" rng).
      dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32 and the
        logits are returned as float32.
      remat: recompute each block's activations in the backward pass (`nn.remat`):
        the same gradients for less memory.
      layer_norm_epsilon: the LayerNorms' epsilon (GPT-2's `layer_norm_epsilon`).
      gelu_approximate: the MLP's GELU in its tanh form (GPT-2's "gelu_new"); False = the
        exact erf form (Hugging Face "gelu").
      scan_layers: run the blocks as one `nn.scan` over parameters stacked on a leading
        "layers" axis (params["blocks"], not block_0..block_{L-1}): the same function, but
        XLA compiles one block instead of L, so compile time stops growing with depth.
    """
    vocab_size: int = 256
    num_layers: int = 6
    num_heads: int = 6
    width: int = 384
    mlp_ratio: int = 4
    max_len: int = 256
    positions: str = "learned"
    tie_embeddings: bool = False
    dropout: float = 0.0
    dtype: str = "float32"
    remat: bool = False
    layer_norm_epsilon: float = 1e-5
    gelu_approximate: bool = True
    scan_layers: bool = False

    def _check(self, length: int) -> None:
        if self.positions not in POSITIONS:
            raise ConfigError(f"unknown GPT positions {self.positions!r}. Valid: {', '.join(POSITIONS)}.")
        if self.width % self.num_heads:
            raise ConfigError(f"GPT width {self.width} is not divisible by num_heads {self.num_heads}.")
        if self.positions == "rotary" and (self.width // self.num_heads) % 2:
            raise ConfigError(f"rotary positions need an even head dim, got {self.width // self.num_heads}.")
        if length > self.max_len:
            raise ConfigError(f"sequence length {length} exceeds GPT max_len {self.max_len}.")

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, *, train: bool, decode: bool = False,
                 segmentation: jnp.ndarray | None = None,
                 segment_positions: jnp.ndarray | None = None) -> jnp.ndarray:
        """tokens: (B, T) int ids -> (B, T, vocab_size) float32 next-token logits.

        Packed rows (several documents in one row, data/packing.py) pass `segmentation`
        (B, T) segment ids (1, 2, ... per document, 0 on padding) and `segment_positions`
        (B, T) positions restarting at 0 in each segment: a token then attends only to
        earlier tokens of its own segment, so each document's logits are those it gets alone.

        With `decode=True` the call reads and writes the `cache` collection (pass
        `mutable=["cache"]`); T is usually 1, or a whole prompt for a single prefill call.
        Decoding takes no segments.
        """
        length = tokens.shape[1]
        self._check(length)
        dtype = jnp.dtype(self.dtype)
        if (segmentation is None) != (segment_positions is None) or (decode and segmentation is not None):
            raise ValueError("GPT takes segmentation and segment_positions together, and not when decoding.")

        positions = jnp.arange(length)  # (T,)
        mask = None
        if segmentation is not None:
            positions = segment_positions                                            # (B, T)
            mask = (segmentation[:, :, None] == segmentation[:, None, :])[:, None]   # (B, 1, T, T)
        if decode:
            initialized = self.has_variable("cache", "cache_index")
            index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if initialized:
                positions = positions + index.value
                index.value = index.value + length

        embed = nn.Embed(num_embeddings=self.vocab_size, features=self.width, dtype=dtype,
                         name="token_embed", embedding_init=normal(0.02, ("vocab", "embed")))
        x = embed(tokens)  # (B, T, E)
        if self.positions == "learned":
            table = self.param("pos_embed", normal(0.02, (None, "embed")), (self.max_len, self.width))
            pos = jnp.take(table, positions, axis=0).astype(dtype)  # (T, E) or (B, T, E)
            x = x + (pos[None] if pos.ndim == 2 else pos)
        x = nn.Dropout(rate=self.dropout, deterministic=not train)(x)

        block_cls = Block
        if self.remat and not decode:
            block_cls = nn.remat(Block, static_argnums=(4, 5))  # self, x, positions, mask, train, decode
        out_stddev = 0.02 / (2 * self.num_layers) ** 0.5  # GPT-2's scaled residual init
        block_fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_ratio * self.width,
                            max_len=self.max_len, rotary=self.positions == "rotary",
                            out_stddev=out_stddev, dropout=self.dropout,
                            layer_norm_epsilon=self.layer_norm_epsilon,
                            gelu_approximate=self.gelu_approximate, dtype=dtype)
        if self.scan_layers:
            stack = nn.scan(lambda block, x, positions, mask: (block(x, positions, mask, train, decode), None),
                            variable_axes={"params": 0, "cache": 0},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=nn.broadcast, length=self.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(block_cls(**block_fields, name="blocks"), x, positions, mask)
        else:
            for i in range(self.num_layers):
                x = block_cls(**block_fields, name=f"block_{i}")(x, positions, mask, train, decode)
        x = layer_norm(dtype, "ln_final", epsilon=self.layer_norm_epsilon)(x)

        if self.tie_embeddings:
            logits = embed.attend(x)  # (B, T, V)
        else:
            logits = nn.Dense(features=self.vocab_size, use_bias=False, dtype=dtype, name="head",
                              kernel_init=normal(0.02, ("embed", "vocab")))(x)
        return logits.astype(jnp.float32)

