"""2-D convolution with the implementation chosen per shape and backend (as models/attention.py
chooses attention's).

XLA:CPU's convolution (Eigen) is pathological when the output is 2x2 or smaller, which is
where small images end up after two stride-2 stages (a 32x32 CIFAR image at ResNet-50's
7x7 is fine; the 8x8 digits at ResNet-20's last stage are not). Forward + backward of one
3x3 convolution at batch 128, output 2x2, CPU ms on 2 cores: 64 -> 64 channels 11.8 vs 1.8
as im2col; 256 -> 256: 402 vs 23; 512 -> 512 at batch 64: 2,366 vs 43. At 3x3 outputs and
larger XLA's own is as fast or faster (4x4 64 -> 64: 7.8 vs 7.8; 32x32: 2-3.7x faster), so
only those tiny outputs take the other path: the kh*kw shifted (and strided) views of the
padded input concatenated on the channel axis and multiplied by the kernel in one matmul,
(B, Ho, Wo, kh*kw*C) @ (kh*kw*C, O), whose gradients are plain dots, pads and adds.
The configs/digits_resnet.py train step (its last stage is 2x2): ~45% less CPU time,
measured in README.md, "Speed".
GPUs and TPUs always use XLA's convolution.

`Conv` is a drop-in for the subset of `flax.linen.Conv` the models use, with the same
parameter names and shapes, so checkpoints move between backends and paths unchanged. Both
paths give the same values up to float rounding (tests/test_conv.py).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = int | str | Sequence[tuple[int, int]]


def _explicit_padding(padding: Padding, size: tuple[int, int], kernel: tuple[int, int],
                      strides: tuple[int, int]) -> list[tuple[int, int]]:
    """((top, bottom), (left, right)) for an int, "SAME", "VALID" or explicit pairs, as
    lax.conv_general_dilated reads them."""
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    if isinstance(padding, str):
        return [tuple(p) for p in jax.lax.padtype_to_pads(size, kernel, strides, padding.upper())]
    return [tuple(p) for p in padding]


def im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                padding: list[tuple[int, int]]) -> jnp.ndarray:
    """x: (B, H, W, C), kernel: (kh, kw, C, O) -> (B, Ho, Wo, O), as one matmul over patches."""
    kh, kw, c, o = kernel.shape
    sh, sw = strides
    if any(p != (0, 0) for p in padding):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    views = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]   # (B, Ho, Wo, C) each
             for i in range(kh) for j in range(kw)]
    patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)  # (B, Ho, Wo, kh*kw*C)
    return jnp.dot(patches, kernel.reshape(kh * kw * c, o))


# Outputs of at most this many positions (2x2) take the im2col path on the CPU.
IM2COL_MAX_POSITIONS = 4


def output_size(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    return (size + sum(pads) - kernel) // stride + 1


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
           padding: list[tuple[int, int]]) -> jnp.ndarray:
    """NHWC convolution without dilation or groups; im2col for tiny outputs on the CPU."""
    ho, wo = (output_size(x.shape[1 + d], kernel.shape[d], strides[d], padding[d]) for d in range(2))
    if jax.default_backend() == "cpu" and ho * wo <= IM2COL_MAX_POSITIONS:
        return im2col_conv(x, kernel, strides, padding)
    return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """A 2-D convolution over (B, H, W, C) inputs; the arguments of `flax.linen.Conv` that
    the models use, with the same parameters ("kernel" (kh, kw, C, O), "bias" (O,))."""
    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel_size = tuple(self.kernel_size)
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        padding = _explicit_padding(self.padding, x.shape[1:3], kernel_size, strides)
        y = conv2d(x, kernel, strides, padding)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
