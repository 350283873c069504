"""Small building blocks shared by the Transformer families (gpt, vit, transformer):
initialisers that carry logical axis names, a LayerNorm whose parameters carry them, and
the conversion between per-layer and stacked (scan_layers) parameter layouts, the
LoRA-aware dense layer (`LoRADense`) with the adapter merge (`merge_lora`)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError, UnknownNameError, unknown_name_message


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


# --- LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") ---------

# Projections an adapter may target, by role; each family maps them to its own layers.
LORA_TARGETS = ("query", "key", "value", "out", "mlp_in", "mlp_out")
LORA_PREFIXES = ("lora_a", "lora_b")  # adapter parameter names (a fused layer adds "_<slot>")


def check_lora(rank: int, alpha: float, targets: tuple[str, ...]) -> None:
    """Refuses LoRA settings that would fail later or silently train nothing."""
    if rank < 0:
        raise ConfigError(f"model.lora_rank must be >= 0 (0 = off), got {rank}.")
    if not rank:
        return
    if not alpha > 0:
        raise ConfigError(f"model.lora_alpha must be positive (the adapters are scaled by alpha/rank), got {alpha}.")
    if not targets:
        raise ConfigError(f"model.lora_targets is empty, so lora_rank={rank} would add no adapter; "
                          f"name some of {', '.join(LORA_TARGETS)}.")
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown:
        raise UnknownNameError(f"model.lora_targets {tuple(targets)!r}: "
                               + unknown_name_message("LoRA target", unknown[0], list(LORA_TARGETS)))


def lora_args(lora_rank: int, lora_alpha: float, lora_targets: tuple[str, ...], role: str) -> dict:
    """`LoRADense` keyword arguments for the projection playing `role` (one of
    LORA_TARGETS): an adapter of `lora_rank` when `lora_targets` names it, else none."""
    return dict(lora_rank=lora_rank if role in lora_targets else 0, lora_alpha=lora_alpha)


def lora_uniform(fan_in: int) -> nn.initializers.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's Kaiming-uniform (a=sqrt(5)) that the
    reference implementation (loralib) and PEFT give the down-projection A."""
    bound = fan_in ** -0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LoRADense(nn.DenseGeneral):
    """`nn.DenseGeneral` (`nn.Dense` when `features` is an int and `axis` -1) plus an
    optional low-rank adapter: y = x W + b + (alpha / rank) * (x A) B.

    A (the contracted input axes, rank) starts Kaiming-uniform and B (rank, features) at
    zero, so a fresh adapter leaves the layer's output unchanged; the adapters take the
    kernel's logical axis names (the rank axis is replicated), so sharding rules still
    apply. With `lora_rank` 0 nothing is added: the parameters and the computation are
    those of `nn.DenseGeneral`.

    Attributes:
      lora_rank: r; 0 = no adapter.
      lora_alpha: the adapter output is scaled by lora_alpha / lora_rank.
      lora_slots: for a fused projection whose first feature axis stacks several outputs
        (GPT's (3, H, D) query/key/value): which entries get an adapter, each its own
        pair `lora_a_<slot>` (inputs, r) and `lora_b_<slot>` (r, other feature axes);
        () = one pair `lora_a`, `lora_b` over the whole output.
    """
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_slots: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        y = super().__call__(inputs)
        if not self.lora_rank:
            return y
        features = tuple(self.features) if isinstance(self.features, (tuple, list)) else (self.features,)
        axes = tuple(self.axis) if isinstance(self.axis, (tuple, list)) else (self.axis,)
        axes = tuple(a % inputs.ndim for a in axes)
        in_shape = tuple(inputs.shape[a] for a in axes)
        kernel = self.scope.get_variable("params", "kernel")
        # At init the kernel is boxed with its logical names; the adapters reuse them.
        names = getattr(kernel, "names", None) or (None,) * (len(in_shape) + len(features))
        in_names, out_names = tuple(names[:len(in_shape)]), tuple(names[len(in_shape):])
        fan_in = int(np.prod(in_shape))
        scale = self.lora_alpha / self.lora_rank
        dtype = self.dtype or y.dtype
        contract = (axes, tuple(range(len(axes))))

        def delta(suffix: str, out_shape: tuple[int, ...], b_names: tuple) -> jnp.ndarray:
            a = self.param("lora_a" + suffix, nn.with_logical_partitioning(
                lora_uniform(fan_in), in_names + (None,)), in_shape + (self.lora_rank,))
            b = self.param("lora_b" + suffix, zeros((None,) + b_names), (self.lora_rank,) + out_shape)
            h = jax.lax.dot_general(inputs.astype(dtype), a.astype(dtype), (contract, ((), ())))  # (..., r)
            return jnp.tensordot(h, b.astype(dtype), axes=1) * scale  # (..., *out_shape)

        if not self.lora_slots:
            return y + delta("", features, out_names)
        slot_axis = y.ndim - len(features)  # the fused axis of y
        for slot in self.lora_slots:
            d = delta(f"_{slot}", features[1:], out_names[1:])
            index = (slice(None),) * slot_axis + (slot,)
            y = y.at[index].add(d)
        return y


def lora_slot(name: str) -> int | None:
    """The fused slot an adapter parameter targets ("lora_a_2" -> 2); None for a
    whole-output one ("lora_a")."""
    slot = name[len("lora_a_"):]
    return int(slot) if slot else None


def merge_lora(params: dict, alpha: float) -> dict:
    """`params` with every adapter folded into its layer's kernel, W + (alpha / r) A B
    (Strata kernels are (inputs..., features...), so no transpose), and the adapter
    parameters removed: the plain model's parameters, computing the same function."""
    out = {}
    for key, value in params.items():
        if not isinstance(value, dict):
            out[key] = value
            continue
        if "kernel" not in value or not any(k.startswith(LORA_PREFIXES) for k in value):
            out[key] = merge_lora(value, alpha)
            continue
        kernel = np.array(value["kernel"], np.float32)
        for name in sorted(k for k in value if k.startswith("lora_a")):
            a, b = np.asarray(value[name], np.float32), np.asarray(value["lora_b" + name[len("lora_a"):]], np.float32)
            update = (alpha / a.shape[-1]) * np.tensordot(a, b, axes=1)  # (inputs..., features...)
            slot = lora_slot(name)
            if slot is None:
                kernel += update
            else:
                kernel[(slice(None),) * (a.ndim - 1) + (slot,)] += update
        out[key] = {k: v for k, v in value.items() if not k.startswith(LORA_PREFIXES)}
        out[key]["kernel"] = kernel
    return out
