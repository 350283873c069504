"""Small building blocks shared by the Transformer families (gpt, vit, transformer):
initialisers that carry logical axis names, and a LayerNorm whose parameters carry them."""
from __future__ import annotations

from typing import Any

import flax.linen as nn


def normal(stddev: float, axes: tuple[str | None, ...]) -> nn.initializers.Initializer:
    """N(0, stddev^2) initialiser whose parameter is named by logical `axes`."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def zeros(axes: tuple[str | None, ...]) -> nn.initializers.Initializer:
    """Zero initialiser whose parameter is named by logical `axes`."""
    return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def layer_norm(dtype: Any, name: str | None, epsilon: float) -> nn.LayerNorm:
    """LayerNorm over the last (`embed`) axis: scale 1, bias 0, both named `embed`.
    `name` None: named by the attribute it is assigned to in a `setup`."""
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=zeros(("embed",)))
