"""ResNets: CIFAR-style (depth 6n+2, He et al. 2016 sec. 4.2) and ImageNet-style (18-152).

    ResNet(depth=20, family="cifar")       # 0.27M params, 3 stages of 16/32/64 channels
    ResNet(depth=50, family="imagenet")    # 25.6M params, bottleneck blocks, 7x7 stem
    ResNet(depth=18, family="imagenet", stem="cifar")  # ResNet-18 for 32x32 inputs
    ResNet(depth=56, family="cifar", shortcut="pad")    # 0.85M params: He et al.'s CIFAR option A

Batch statistics live in the `batch_stats` collection; the loop keeps them in the train
state and updates them through `mutable=["batch_stats"]` when `train=True`.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from errors import ConfigError
from models.conv import Conv

SHORTCUTS = ("projection", "pad")

# depth -> (blocks per stage, bottleneck?)
IMAGENET_DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}

conv_init = nn.with_logical_partitioning(
    nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    (None, None, "conv_in", "conv_out"))


def _norm(train: bool, dtype: Any, zero_init: bool = False) -> nn.Module:
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
        scale_init=nn.with_logical_partitioning(scale_init, ("conv_out",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


def pad_shortcut(x: jnp.ndarray, features: int, strides: int) -> jnp.ndarray:
    """He et al. 2016's option A: the identity, subsampled by `strides` and zero-padded
    to `features` channels (no parameters); (B, H, W, C) -> (B, H/s, W/s, features)."""
    x = x[:, ::strides, ::strides]
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34, CIFAR ResNets)."""
    features: int
    strides: int = 1
    dtype: Any = jnp.float32
    shortcut: str = "projection"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        y = conv(features=self.features, kernel_size=(3, 3), strides=self.strides, padding=1)(x)
        y = nn.relu(_norm(train, self.dtype)(y))
        y = conv(features=self.features, kernel_size=(3, 3), padding=1)(y)
        y = _norm(train, self.dtype, zero_init=True)(y)
        if x.shape != y.shape and self.shortcut == "pad":  # "option A"
            x = pad_shortcut(x, self.features, self.strides)
        elif x.shape != y.shape:  # projection shortcut ("option B")
            x = conv(features=self.features, kernel_size=(1, 1), strides=self.strides)(x)
            x = _norm(train, self.dtype)(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4) convolutions with a residual connection (ResNet-50+)."""
    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        y = nn.relu(_norm(train, self.dtype)(conv(features=self.features, kernel_size=(1, 1))(x)))
        y = conv(features=self.features, kernel_size=(3, 3), strides=self.strides, padding=1)(y)
        y = nn.relu(_norm(train, self.dtype)(y))
        y = conv(features=self.features * 4, kernel_size=(1, 1))(y)
        y = _norm(train, self.dtype, zero_init=True)(y)
        if x.shape != y.shape:
            x = _norm(train, self.dtype)(
                conv(features=self.features * 4, kernel_size=(1, 1), strides=self.strides)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A residual network for image classification.

    Attributes:
      depth: 20/32/44/56/110 (any 6n+2) for `family="cifar"`; 18/34/50/101/152 for
        `family="imagenet"`.
      family: "cifar" (3 stages, base width 16) or "imagenet" (4 stages, base width 64).
      stem: "cifar" (3x3 conv, stride 1) or "imagenet" (7x7/2 conv + 3x3/2 max-pool);
        defaults to the family's own.
      num_classes: size of the output layer.
      width: base number of channels; defaults to the family's own (16 or 64).
      shortcut: where a block changes shape, "projection" (1x1 conv + BatchNorm, He et al.'s
        option B) or "pad" (subsampled identity with zero channels, option A, their CIFAR
        models; basic blocks only).
      dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32.
    """
    depth: int = 20
    family: str = "cifar"
    stem: str | None = None
    num_classes: int = 10
    width: int | None = None
    dtype: str = "float32"
    shortcut: str = "projection"

    def _layout(self) -> tuple[tuple[int, ...], bool, int]:
        if self.shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown ResNet shortcut {self.shortcut!r}. Valid: {', '.join(SHORTCUTS)}.")
        if self.family == "cifar":
            if (self.depth - 2) % 6 or self.depth < 8:
                raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {self.depth}.")
            n = (self.depth - 2) // 6
            return (n, n, n), False, self.width or 16
        if self.family == "imagenet":
            if self.depth not in IMAGENET_DEPTHS:
                raise ConfigError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}, got {self.depth}.")
            blocks, bottleneck = IMAGENET_DEPTHS[self.depth]
            return blocks, bottleneck, self.width or 64
        raise ConfigError(f"unknown ResNet family {self.family!r}. Valid: cifar, imagenet.")

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """x: (B, H, W, C) images -> (B, num_classes) logits."""
        blocks, bottleneck, width = self._layout()
        dtype = jnp.dtype(self.dtype)
        x = x.astype(dtype)
        stem = self.stem or self.family
        if stem == "imagenet":
            x = Conv(features=width, kernel_size=(7, 7), strides=2, padding=3, use_bias=False, dtype=dtype,
                        kernel_init=conv_init, name="stem_conv")(x)
            x = nn.relu(_norm(train, dtype)(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        else:
            x = Conv(features=width, kernel_size=(3, 3), padding=1, use_bias=False, dtype=dtype,
                        kernel_init=conv_init, name="stem_conv")(x)
            x = nn.relu(_norm(train, dtype)(x))
        if bottleneck and self.shortcut != "projection":
            raise ConfigError(f"ResNet-{self.depth} has bottleneck blocks, which need "
                              f"shortcut='projection', got {self.shortcut!r}.")
        for stage, num_blocks in enumerate(blocks):
            for i in range(num_blocks):
                strides = 2 if stage > 0 and i == 0 else 1
                if bottleneck:
                    block = BottleneckBlock(features=width * 2**stage, strides=strides, dtype=dtype)
                else:
                    block = BasicBlock(features=width * 2**stage, strides=strides, dtype=dtype,
                                       shortcut=self.shortcut)
                x = block(x, train)
        x = jnp.mean(x, axis=(1, 2))  # (B, C) global average pool
        x = nn.Dense(features=self.num_classes, dtype=dtype, name="head",
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.zeros, ("embed", "classes")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)))(x)
        return x.astype(jnp.float32)
