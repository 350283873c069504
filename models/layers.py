"""Small building blocks shared by the Transformer families (gpt, vit, transformer):
initialisers that carry logical axis names, a LayerNorm whose parameters carry them, and
the conversion between per-layer and stacked (scan_layers) parameter layouts."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import numpy as np


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


# Layer stacks: `scan_layers=True` models keep their L blocks' parameters in one subtree
# "blocks/..." with a leading (L,) axis; unscanned ones as "block_0/...", "block_1/...".
LAYER, STACK = "block_", "blocks/"


def stack_layers(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat ("a/b/c" -> array) parameters with per-layer "block_{i}/x" leaves -> the same
    with "blocks/x" = stack over i (the scan_layers layout); other leaves unchanged."""
    out, layers = {}, {}
    for key, value in flat.items():
        head, _, rest = key.partition("/")
        if head.startswith(LAYER) and head[len(LAYER):].isdigit():
            layers.setdefault(rest, {})[int(head[len(LAYER):])] = value
        else:
            out[key] = value
    for rest, by_layer in layers.items():
        out[STACK + rest] = np.stack([by_layer[i] for i in sorted(by_layer)])
    return out


def unstack_layers(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `stack_layers`: "blocks/x" (L, ...) -> "block_{i}/x" for i < L."""
    out = {}
    for key, value in flat.items():
        if key.startswith(STACK):
            for i, layer in enumerate(np.asarray(value)):
                out[f"{LAYER}{i}/{key[len(STACK):]}"] = layer
        else:
            out[key] = value
    return out
