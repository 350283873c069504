"""Vision Transformer (Dosovitskiy et al. 2021), in the layout of big_vision's `models/vit.py`.

    ViT(variant="B/16", num_classes=1000)         # 86.6M params at 224x224 (the paper's ViT-B/16)
    ViT(variant="S/16", pool="gap", posemb="sincos2d")  # big_vision's "plain ViT baseline"
    ViT(variant="Ti/2", num_classes=10)           # 8x8 digits: 16 patches of 2x2

The image is cut into non-overlapping patches by a strided convolution, a class token is
prepended (`pool="cls"`) or the tokens are averaged at the end (`pool="gap"`), and a stack
of pre-LayerNorm encoder blocks feeds a zero-initialised linear head.

Applied with `mutable=["intermediates"]`, each block sows its attention weights, (B, H, N, N)
under `intermediates/block_<i>/attention` (for attention rollout); the output is the same.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError, UnknownNameError, unknown_name_message
from models.attention import attention
from models.layers import LoRADense, check_lora, layer_norm, lora_args, zeros

# name -> (width, depth, num_heads, mlp_dim), from the paper's Table 1 and big_vision.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
POOLS = ("cls", "gap")
POSEMBS = ("learn", "sincos2d")

xavier = nn.initializers.xavier_uniform()


def parse_variant(variant: str) -> tuple[tuple[int, int, int, int], int]:
    """Splits a variant such as "S/16" into ((width, depth, num_heads, mlp_dim), patch size)."""
    name, _, patch = variant.partition("/")
    if name not in VARIANTS:
        raise UnknownNameError(
            unknown_name_message("ViT size", name, list(VARIANTS))
            + f" (in variant {variant!r}; write '<size>/<patch>', e.g. 'S/16'.)")
    if not patch.isdigit() or int(patch) < 1:
        raise ConfigError(f"ViT variant {variant!r} needs a patch size after the slash, e.g. {name}/16.")
    return VARIANTS[name], int(patch)


def sincos2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2D sine-cosine position embedding (big_vision `posemb_sincos_2d`): (h*w, dim)."""
    if dim % 4:
        raise ConfigError(f"sincos2d position embedding needs a width divisible by 4, got {dim}.")
    y, x = np.mgrid[:height, :width]
    omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1 or 1))
    y = y.reshape(-1)[:, None] * omega[None, :]  # (h*w, dim/4)
    x = x.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm Transformer encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-6
    gelu_approximate: bool = True
    dtype: Any = jnp.float32
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_targets: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: (B, N, E) tokens -> (B, N, E)."""
        width = x.shape[-1]
        head_dim = width // self.num_heads
        drop = nn.Dropout(rate=self.dropout, deterministic=not train)

        def lora(role: str) -> dict:
            return lora_args(self.lora_rank, self.lora_alpha, self.lora_targets, role)

        y = layer_norm(self.dtype, "ln_attn", epsilon=self.layer_norm_epsilon)(x)
        q, k, v = (LoRADense(features=(self.num_heads, head_dim), dtype=self.dtype,
                             name=name, bias_init=zeros(("heads", "kv")), kernel_init=(
                                 nn.with_logical_partitioning(xavier, ("embed", "heads", "kv"))),
                             **lora(name))(y)
                   for name in ("query", "key", "value"))  # (B, N, H, D) each
        y = attention(q, k, v)  # (B, N, H, D)
        if self.is_mutable_collection("intermediates"):  # attention rollout reads these; computed
            # only when asked for (mutable=["intermediates"]), so training is unchanged
            logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
            self.sow("intermediates", "attention", jax.nn.softmax(logits / np.sqrt(head_dim), -1))
        y = LoRADense(features=width, axis=(-2, -1), dtype=self.dtype, name="out",
                      kernel_init=nn.with_logical_partitioning(xavier, ("heads", "kv", "embed")),
                      bias_init=zeros(("embed",)), **lora("out"))(y)  # (B, N, E)
        x = x + drop(y)

        y = layer_norm(self.dtype, "ln_mlp", epsilon=self.layer_norm_epsilon)(x)
        y = LoRADense(features=self.mlp_dim, dtype=self.dtype, name="mlp_in",
                      kernel_init=nn.with_logical_partitioning(xavier, ("embed", "mlp")),
                      bias_init=nn.with_logical_partitioning(nn.initializers.normal(1e-6), ("mlp",)),
                      **lora("mlp_in"))(y)
        y = drop(nn.gelu(y, approximate=self.gelu_approximate))  # (B, N, mlp_dim)
        y = LoRADense(features=width, dtype=self.dtype, name="mlp_out",
                      kernel_init=nn.with_logical_partitioning(xavier, ("mlp", "embed")),
                      bias_init=nn.with_logical_partitioning(nn.initializers.normal(1e-6), ("embed",)),
                      **lora("mlp_out"))(y)
        return x + drop(y)


class ViT(nn.Module):
    """A Vision Transformer classifier.

    Attributes:
      variant: "<size>/<patch>", size one of Ti, S, B, L, H (width/depth/heads/MLP of the
        paper's Table 1 and big_vision), e.g. "B/16" or "Ti/2".
      width, depth, num_heads, mlp_dim: override the variant's sizes (None keeps them).
      num_classes: size of the output layer.
      pool: "cls" (a learned class token, read out at the end) or "gap" (mean of the tokens).
      dropout: rate after the position embedding, in the MLPs and on each residual branch,
        used when `train=True` (draws from the "dropout" rng).
      posemb: "learn" (a learned table, as in the paper) or "sincos2d" (fixed, no parameters).
      rep_size: > 0 adds a pre-logits layer, Dense(rep_size) + tanh, before the head
        (big_vision's `rep_size`, the paper's "representation layer"); 0 = none.
      dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32 and the
        logits are returned as float32.
      remat: recompute each block's activations in the backward pass (`nn.remat`):
        the same gradients for less memory.
      layer_norm_epsilon: the LayerNorms' epsilon (Hugging Face ViT's `layer_norm_eps`
        is 1e-12).
      gelu_approximate: the MLP's GELU in its tanh form; False = the exact erf form
        (Hugging Face ViT's "gelu").
      lora_rank, lora_alpha, lora_targets: LoRA adapters as in `models.gpt.GPT`, on the
        encoder blocks' query, key, value, out, mlp_in, mlp_out projections.
    """
    variant: str = "Ti/4"
    width: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    num_classes: int = 10
    pool: str = "cls"
    dropout: float = 0.0
    posemb: str = "learn"
    rep_size: int = 0
    dtype: str = "float32"
    remat: bool = False
    layer_norm_epsilon: float = 1e-6
    gelu_approximate: bool = True
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("query", "value")

    def _sizes(self) -> tuple[int, int, int, int, int]:
        """(width, depth, num_heads, mlp_dim, patch) after the overrides, checked."""
        (width, depth, num_heads, mlp_dim), patch = parse_variant(self.variant)
        width, depth = self.width or width, self.depth or depth
        num_heads, mlp_dim = self.num_heads or num_heads, self.mlp_dim or mlp_dim
        if self.pool not in POOLS:
            raise UnknownNameError(unknown_name_message("ViT pool", self.pool, list(POOLS)))
        if self.posemb not in POSEMBS:
            raise UnknownNameError(unknown_name_message("ViT posemb", self.posemb, list(POSEMBS)))
        if width % num_heads:
            raise ConfigError(f"ViT width {width} is not divisible by num_heads {num_heads}.")
        check_lora(self.lora_rank, self.lora_alpha, self.lora_targets)
        return width, depth, num_heads, mlp_dim, patch

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """x: (B, H, W, C) images -> (B, num_classes) float32 logits."""
        width, depth, num_heads, mlp_dim, patch = self._sizes()
        if x.shape[1] % patch or x.shape[2] % patch:
            raise ConfigError(f"image size {x.shape[1]}x{x.shape[2]} is not a multiple of the patch size {patch}.")
        dtype = jnp.dtype(self.dtype)
        x = nn.Conv(features=width, kernel_size=(patch, patch), strides=(patch, patch),
                    padding="VALID", dtype=dtype, name="patch_embed",
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(), (None, None, None, "embed")),
                    bias_init=zeros(("embed",)))(x.astype(dtype))  # (B, h, w, E)
        batch, h, w, _ = x.shape
        x = jnp.reshape(x, (batch, h * w, width))  # (B, N, E)

        if self.pool == "cls":
            cls = self.param("cls", zeros((None, None, "embed")), (1, 1, width))
            x = jnp.concatenate([jnp.tile(cls.astype(dtype), (batch, 1, 1)), x], axis=1)  # (B, 1+N, E)
        if self.posemb == "learn":
            # As in the paper (and timm) the class token has a position embedding too.
            pos = self.param("pos_embed", nn.with_logical_partitioning(
                nn.initializers.normal(width ** -0.5), (None, None, "embed")), (1, x.shape[1], width))
        else:
            pos = jnp.asarray(sincos2d(h, w, width))[None]  # (1, N, E)
            if self.pool == "cls":
                pos = jnp.concatenate([jnp.zeros((1, 1, width)), pos], axis=1)
        x = x + pos.astype(dtype)
        x = nn.Dropout(rate=self.dropout, deterministic=not train)(x)

        block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        for i in range(depth):
            x = block_cls(num_heads=num_heads, mlp_dim=mlp_dim, dropout=self.dropout,
                          layer_norm_epsilon=self.layer_norm_epsilon,
                          gelu_approximate=self.gelu_approximate, dtype=dtype,
                          lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                          lora_targets=tuple(self.lora_targets), name=f"block_{i}")(x, train)
        x = layer_norm(dtype, "ln_final", epsilon=self.layer_norm_epsilon)(x)

        x = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)  # (B, E)
        if self.rep_size:
            x = nn.tanh(nn.Dense(features=self.rep_size, dtype=dtype, name="pre_logits",
                                 kernel_init=nn.with_logical_partitioning(xavier, ("embed", "mlp")),
                                 bias_init=zeros(("mlp",)))(x))  # (B, rep_size)
        x = nn.Dense(features=self.num_classes, dtype=dtype, name="head",
                     kernel_init=zeros(("embed", "classes")), bias_init=zeros(("classes",)))(x)
        return x.astype(jnp.float32)
