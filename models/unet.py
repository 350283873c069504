"""The DDPM U-Net (Ho et al. 2020, appendix B): predicts the noise eps in x_t.

    UNet(channels=128, channel_mults=(1, 2, 2, 2), attention_resolutions=(16,), dropout=0.1)
        # CIFAR-10 32x32x3, 35.7M params as published
    UNet(channels=64, channel_mults=(1, 2), attention_resolutions=(4,), num_classes=10)
        # 8x8x1 digits, class-conditional for classifier-free guidance

Layout, as in the reference implementation: a 3x3 stem; per resolution `num_res_blocks`
residual blocks (GroupNorm, SiLU, 3x3 conv, + projected time embedding, GroupNorm, SiLU,
dropout, 3x3 conv), each followed by self-attention where the spatial size is in
`attention_resolutions`, then a stride-2 conv; a middle block (res, attention, res; the
middle attention is always there, as in DDPM); the mirrored up path with
`num_res_blocks + 1` blocks per resolution, each taking one skip connection, and
nearest-neighbour x2 + 3x3 conv upsampling; GroupNorm, SiLU, 3x3 conv out. The last conv
of every residual branch and of the output starts at zero.

Classifier-free guidance (Ho & Salimans 2022): with `num_classes` set, a learned embedding
of `num_classes + 1` rows is added to the time embedding; row `num_classes` is the null
label, used when `y` is None (the task drops labels to it during training).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from errors import ConfigError
from models.conv import Conv

CONV_AXES = (None, None, "conv_in", "conv_out")
default_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")  # DDPM's `default_init`
conv_init = nn.with_logical_partitioning(default_init, CONV_AXES)
conv_zero_init = nn.with_logical_partitioning(nn.initializers.zeros, CONV_AXES)
channel_zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",))
channel_ones = nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",))


def timestep_embedding(t: jnp.ndarray, dim: int) -> jnp.ndarray:
    """Sinusoidal embedding of timesteps (B,) -> (B, dim), as in DDPM / Transformer."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # (B, half)
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def _conv(features: int, dtype: Any, name: str, kernel: int = 3, strides: int = 1,
          zero: bool = False) -> Conv:
    return Conv(features=features, kernel_size=(kernel, kernel), strides=strides, padding="SAME",
                   dtype=dtype, name=name,
                   kernel_init=conv_zero_init if zero else conv_init, bias_init=channel_zeros)


def _norm(num_groups: int, dtype: Any, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=num_groups, epsilon=1e-6, dtype=dtype, name=name,
                        scale_init=channel_ones, bias_init=channel_zeros)


def _dense(features: int, axes: tuple[str, str], dtype: Any, name: str,
           zero: bool = False) -> nn.Dense:
    init = nn.initializers.zeros if zero else default_init
    return nn.Dense(features=features, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the time embedding added in between, plus a skip."""
    features: int
    num_groups: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, temb: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: (B, H, W, C_in), temb: (B, E) -> (B, H, W, features)."""
        h = nn.silu(_norm(self.num_groups, self.dtype, "norm1")(x))
        h = _conv(self.features, self.dtype, "conv1")(h)
        t = _dense(self.features, ("embed", "conv_out"), self.dtype, "temb_proj")(nn.silu(temb))
        h = h + t[:, None, None, :]
        h = nn.silu(_norm(self.num_groups, self.dtype, "norm2")(h))
        h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
        h = _conv(self.features, self.dtype, "conv2", zero=True)(h)
        if x.shape[-1] != self.features:  # 1x1 "network in network" shortcut
            x = _conv(self.features, self.dtype, "shortcut", kernel=1)(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual connection."""
    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        h = _norm(self.num_groups, self.dtype, "norm")(x).reshape(B, H * W, C)
        q, k, v = (_dense(C, ("conv_in", "conv_out"), self.dtype, name)(h) for name in "qkv")
        logits = jnp.einsum("bic,bjc->bij", q, k).astype(jnp.float32) / math.sqrt(C)  # (B, HW, HW)
        weights = nn.softmax(logits, axis=-1).astype(v.dtype)
        h = jnp.einsum("bij,bjc->bic", weights, v)  # (B, HW, C)
        h = _dense(C, ("conv_in", "conv_out"), self.dtype, "proj_out", zero=True)(h)
        return x + h.reshape(B, H, W, C)


class UNet(nn.Module):
    """The DDPM noise-prediction U-Net.

    Attributes:
      channels: base width; level i has `channels * channel_mults[i]` channels and the time
        embedding has `4 * channels`.
      channel_mults: width multiplier per resolution; each level after the first halves
        the spatial size, so H and W must divide by 2**(len(channel_mults) - 1).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_resolutions: spatial sizes (H) at which blocks are followed by attention.
      num_classes: if set, condition on labels y in [0, num_classes]; num_classes is "null".
      dropout: dropout rate inside residual blocks; uses the "dropout" rng when training.
      out_channels: output channels; defaults to the input's.
      num_groups: GroupNorm groups; must divide `channels`.
      dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32.
    """
    channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = ()
    num_classes: int | None = None
    dropout: float = 0.0
    out_channels: int | None = None
    num_groups: int = 8
    dtype: str = "float32"

    def _check(self, height: int, width: int) -> None:
        levels = len(self.channel_mults)
        if self.channels % self.num_groups:
            raise ConfigError(
                f"UNet channels ({self.channels}) must divide by num_groups ({self.num_groups}).")
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ConfigError(f"UNet with {levels} levels needs H and W divisible by "
                             f"{2 ** (levels - 1)}, got {height}x{width}.")
        sizes = [height // 2**i for i in range(levels)]
        unknown = sorted(set(self.attention_resolutions) - set(sizes))
        if unknown:
            raise ConfigError(f"UNet attention_resolutions {unknown} never occur; the resolutions "
                             f"for a {height}x{width} input are {sizes}.")

    @nn.compact
    def __call__(self, x: jnp.ndarray, t: jnp.ndarray, y: jnp.ndarray | None = None, *,
                 train: bool) -> jnp.ndarray:
        """x: (B, H, W, C) noisy images, t: (B,) timesteps, y: (B,) labels or None.

        Returns the predicted noise eps, (B, H, W, out_channels or C), float32.
        """
        B, H, W, C = x.shape
        self._check(H, W)
        dtype = jnp.dtype(self.dtype)
        ch, groups = self.channels, self.num_groups

        def block(features: int, name: str) -> ResBlock:
            return ResBlock(features=features, num_groups=groups, dropout=self.dropout, dtype=dtype,
                            name=name)

        def attention(name: str) -> AttentionBlock:
            return AttentionBlock(num_groups=groups, dtype=dtype, name=name)

        t = jnp.broadcast_to(jnp.asarray(t), (B,))
        temb = timestep_embedding(t, ch).astype(dtype)  # (B, ch)
        temb = _dense(4 * ch, ("embed", "mlp"), dtype, "temb_dense0")(temb)
        temb = _dense(4 * ch, ("mlp", "embed"), dtype, "temb_dense1")(nn.silu(temb))  # (B, 4ch)
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((B,), self.num_classes, jnp.int32)
            temb = temb + nn.Embed(num_embeddings=self.num_classes + 1, features=4 * ch, dtype=dtype,
                                   name="class_embed",
                                   embedding_init=nn.with_logical_partitioning(
                                       nn.initializers.normal(1.0), ("classes", "embed")))(y)
        elif y is not None:
            raise ConfigError("UNet got labels y but num_classes is None.")

        h = _conv(ch, dtype, "conv_in")(x.astype(dtype))  # (B, H, W, ch)
        skips = [h]
        # Down: level l works at (B, H / 2^l, W / 2^l, ch * mult).
        for level, mult in enumerate(self.channel_mults):
            for i in range(self.num_res_blocks):
                h = block(ch * mult, f"down_{level}_block_{i}")(h, temb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = attention(f"down_{level}_attn_{i}")(h)
                skips.append(h)
            if level != len(self.channel_mults) - 1:
                h = _conv(h.shape[-1], dtype, f"down_{level}_downsample", strides=2)(h)
                skips.append(h)

        h = block(h.shape[-1], "mid_block_0")(h, temb, train)
        h = attention("mid_attn")(h)
        h = block(h.shape[-1], "mid_block_1")(h, temb, train)

        # Up: every block takes the matching skip from the way down, last in first out.
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)  # (B, h, w, c + c_skip)
                h = block(ch * mult, f"up_{level}_block_{i}")(h, temb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = attention(f"up_{level}_attn_{i}")(h)
            if level != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2: (B, 2H, 2W, c)
                h = _conv(h.shape[-1], dtype, f"up_{level}_upsample")(h)
        assert not skips

        h = nn.silu(_norm(groups, dtype, "norm_out")(h))
        h = _conv(self.out_channels or C, dtype, "conv_out", zero=True)(h)
        return h.astype(jnp.float32)
