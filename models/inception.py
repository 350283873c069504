"""InceptionV3 as pytorch-fid's "FID Inception" (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567;
mseitzer/pytorch-fid `pytorch_fid/inception.py`, `fid_inception_v3`): the network of the
TensorFlow FID code's `pt_inception-2015-12-05` graph, whose 2048-d pool features define FID.

Differences from a plain InceptionV3 (torchvision's), as pytorch-fid makes them to match
the TF graph: the average pools of the A, C and first E blocks leave padding out of the
mean (`count_include_pad=False`), the second E block max-pools its pool branch, and the
classifier has 1008 outputs. Submodules carry pytorch-fid's names (`Mixed_5b`,
`branch3x3dbl_2`, `conv`, `bn`, `fc`), so its state dict maps onto the parameters name by
name (train/evaluators/inception_weights.py converts it).

Input: (B, 299, 299, 3) images in [-1, 1] (pytorch-fid's `normalize_input` maps [0, 1]
there; the `fid` evaluator's `image_size=299` resizes). Output: the (B, 2048) pool
features, or with `logits=True` the (B, 1008) classifier outputs.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Pads = Sequence[tuple[int, int]] | str

conv_init = nn.with_logical_partitioning(
    nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
    (None, None, "conv_in", "conv_out"))


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001, as the TF graph) -> ReLU."""
    features: int
    kernel: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: Pads = "VALID"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        pad = self.padding if isinstance(self.padding, str) else tuple(tuple(p) for p in self.padding)
        x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=pad, use_bias=False,
                    dtype=self.dtype, kernel_init=conv_init, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=self.dtype,
                         scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                         name="bn")(x)
        return nn.relu(x)


def _same(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric padding that keeps the size of a stride-1 (kh, kw) convolution."""
    return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """3x3, stride 1, padding 1, padding left out of the mean (pytorch-fid's FID blocks)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_s2(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(64, name="branch1x1")(x, train)
        b5 = conv(48, name="branch5x5_1")(x, train)
        b5 = conv(64, (5, 5), padding=_same(5, 5), name="branch5x5_2")(b5, train)
        b3 = conv(64, name="branch3x3dbl_1")(x, train)
        b3 = conv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(b3, train)
        b3 = conv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_3")(b3, train)
        bp = conv(self.pool_features, name="branch_pool")(_avg_pool(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(BasicConv2d, dtype=self.dtype)
        b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x, train)
        bd = conv(64, name="branch3x3dbl_1")(x, train)
        bd = conv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd, train)
        bd = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, _max_pool_s2(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(BasicConv2d, dtype=self.dtype)
        c7 = self.channels_7x7
        b1 = conv(192, name="branch1x1")(x, train)
        b7 = conv(c7, name="branch7x7_1")(x, train)
        b7 = conv(c7, (1, 7), padding=_same(1, 7), name="branch7x7_2")(b7, train)
        b7 = conv(192, (7, 1), padding=_same(7, 1), name="branch7x7_3")(b7, train)
        bd = conv(c7, name="branch7x7dbl_1")(x, train)
        bd = conv(c7, (7, 1), padding=_same(7, 1), name="branch7x7dbl_2")(bd, train)
        bd = conv(c7, (1, 7), padding=_same(1, 7), name="branch7x7dbl_3")(bd, train)
        bd = conv(c7, (7, 1), padding=_same(7, 1), name="branch7x7dbl_4")(bd, train)
        bd = conv(192, (1, 7), padding=_same(1, 7), name="branch7x7dbl_5")(bd, train)
        bp = conv(192, name="branch_pool")(_avg_pool(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(BasicConv2d, dtype=self.dtype)
        b3 = conv(192, name="branch3x3_1")(x, train)
        b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3, train)
        b7 = conv(192, name="branch7x7x3_1")(x, train)
        b7 = conv(192, (1, 7), padding=_same(1, 7), name="branch7x7x3_2")(b7, train)
        b7 = conv(192, (7, 1), padding=_same(7, 1), name="branch7x7x3_3")(b7, train)
        b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, _max_pool_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (average pool) or, with `max_pool`, FIDInceptionE_2."""
    max_pool: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(320, name="branch1x1")(x, train)
        b3 = conv(384, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=_same(1, 3), name="branch3x3_2a")(b3, train),
                              conv(384, (3, 1), padding=_same(3, 1), name="branch3x3_2b")(b3, train)], -1)
        bd = conv(448, name="branch3x3dbl_1")(x, train)
        bd = conv(384, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate([conv(384, (1, 3), padding=_same(1, 3), name="branch3x3dbl_3a")(bd, train),
                              conv(384, (3, 1), padding=_same(3, 1), name="branch3x3dbl_3b")(bd, train)], -1)
        pooled = (nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1))) if self.max_pool
                  else _avg_pool(x))
        bp = conv(192, name="branch_pool")(pooled, train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """pytorch-fid's FID InceptionV3: (B, 299, 299, 3) in [-1, 1] -> (B, 2048) pool features
    (or (B, 1008) logits with `logits=True`)."""
    num_classes: int = 1008   # the TF graph's classifier (1000 classes + 8 unused)
    logits: bool = False
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        dtype = jnp.dtype(self.dtype)
        conv = partial(BasicConv2d, dtype=dtype)
        x = x.astype(dtype)
        x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x, train)       # (B, 149, 149, 32)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x, train)                  # (B, 147, 147, 32)
        x = conv(64, (3, 3), padding=_same(3, 3), name="Conv2d_2b_3x3")(x, train)
        x = _max_pool_s2(x)                                                    # (B, 73, 73, 64)
        x = conv(80, name="Conv2d_3b_1x1")(x, train)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x, train)                 # (B, 71, 71, 192)
        x = _max_pool_s2(x)                                                    # (B, 35, 35, 192)
        for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool, dtype=dtype, name=name)(x, train)            # (B, 35, 35, 288)
        x = InceptionB(dtype=dtype, name="Mixed_6a")(x, train)                # (B, 17, 17, 768)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, dtype=dtype, name=name)(x, train)
        x = InceptionD(dtype=dtype, name="Mixed_7a")(x, train)                # (B, 8, 8, 1280)
        x = InceptionE(dtype=dtype, name="Mixed_7b")(x, train)                # (B, 8, 8, 2048)
        x = InceptionE(max_pool=True, dtype=dtype, name="Mixed_7c")(x, train)
        pool = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)                   # (B, 2048)
        head = nn.Dense(self.num_classes, dtype=dtype, name="fc",
                        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "classes")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)))
        out = head(pool)  # always built, so the converted weights file holds the whole graph
        return out.astype(jnp.float32) if self.logits else pool
