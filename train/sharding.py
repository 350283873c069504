"""The device mesh and the logical-axis rules that place parameters and batches on it.

Models name the logical axes of their parameters (`embed`, `mlp`, `heads`, ...); the
config maps each logical name to zero or more mesh axes (`data`, `fsdp`, `tensor`).
Shardings are derived from `jax.eval_shape`, before anything is allocated.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from errors import MeshError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Batch rows spread over every data-parallel axis; weights are
# split over fsdp along their input/embedding side and over tensor along their output side.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("classes", None),
    ("kv", None),
)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """Resolves one -1 entry to "all remaining devices" and checks the product."""
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise MeshError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}): at most one axis may be -1.")
    if any(s == 0 or s < -1 for s in sizes):
        raise MeshError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}): sizes must be positive or -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise MeshError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}) cannot fill "
                            f"{num_devices} devices: {num_devices} is not a multiple of {known}.")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise MeshError(f"mesh data*fsdp*tensor = {sizes[0]}*{sizes[1]}*{sizes[2]} = "
                        f"{math.prod(sizes)}, but there are {num_devices} devices; "
                        f"make the product {num_devices} or set one axis to -1.")
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all of them)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # CPU or odd topologies: plain row-major order is fine
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """The global batch (config key `what`) must split evenly over data*fsdp devices."""
    dp = data_parallel_size(mesh)
    if global_batch_size % dp:
        raise MeshError(f"{what}={global_batch_size} is not divisible by the "
                        f"data-parallel size data*fsdp={dp}; use a multiple of {dp}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over (data, fsdp), everything else replicated."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def _mesh_axes_for(name: str | None, rules: dict[str, Any]) -> tuple[str, ...]:
    if name is None:
        return ()
    axes = rules.get(name)
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def spec_for(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
             rules: dict[str, Any]) -> P:
    """Mesh PartitionSpec for one array: a mesh axis is used at most once, and only on a
    dimension it divides evenly (otherwise that dimension stays replicated)."""
    used: set[str] = set()
    out = []
    for name, dim in zip(logical, shape):
        axes = [a for a in _mesh_axes_for(name, rules) if a not in used and mesh.shape[a] > 1]
        size = math.prod(mesh.shape[a] for a in axes)
        if not axes or dim % size:
            out.append(None)
            continue
        used.update(axes)
        out.append(axes[0] if len(axes) == 1 else tuple(axes))
    return P(*out)


def _drop_empty_boxes(tree: Any) -> Any:
    """Boxes that hold no array lose their box: under LoRA, optax keeps an empty
    `MaskedNode` in the box of each frozen parameter's optimizer state, and it is placed
    nowhere."""
    boxed = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    return jax.tree.map(lambda x: x.value if boxed(x) and not jax.tree.leaves(x.value) else x, tree,
                        is_leaf=boxed)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
    """NamedShardings for an `eval_shape`d pytree whose leaves may be Linen-boxed."""
    abstract_boxed = _drop_empty_boxes(abstract_boxed)
    rules_dict = dict(rules)
    logical_specs = nn.get_partition_spec(abstract_boxed)
    abstract = nn.unbox(abstract_boxed)

    def one(spec: P, leaf) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        names = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
        return NamedSharding(mesh, spec_for(names, shape, mesh, rules_dict))

    return jax.tree.map(one, logical_specs, abstract,
                        is_leaf=lambda x: isinstance(x, P))


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Config rules (a tuple of (logical, mesh axes) pairs) or the defaults when empty."""
    if not rules:
        return DEFAULT_RULES
    return tuple((str(k), v if v is None or isinstance(v, str) else tuple(v)) for k, v in rules)


def to_global(local_batch: dict, mesh: Mesh) -> dict:
    """This process's rows -> global jax.Arrays sharded over (data, fsdp)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}
