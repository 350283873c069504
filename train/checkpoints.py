"""Orbax checkpoints of the whole run: train state and the Grain iterator position.

Layout: WORKDIR/checkpoints/<step>/{state,data,host[,metrics]}. Saves are asynchronous
(the step loop goes on while arrays are written); `wait()` blocks until the last one is
durable. The last `keep` checkpoints are kept, plus the best by `best_metric` when one is
named. Each save carries a checksum of every array (in `host`), verified on restore: a
damaged file that still decompresses is refused instead of silently resumed from.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from train import files


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose arrays do not match the checksums saved with them."""


def _path_name(path) -> str:
    """'params/BasicBlock_0/Conv_0/kernel' for any pytree path (dicts, dataclasses, tuples)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _words(x, xp):
    """The array's bits as uint32 words (one per element; two for 64-bit types)."""
    if x.dtype == xp.bool_:
        x = x.astype(xp.uint8)
    size = x.dtype.itemsize
    unsigned = xp.uint32 if size == 8 else xp.dtype(f"uint{size * 8}")
    words = jax.lax.bitcast_convert_type(x, unsigned) if xp is jnp else x.view(unsigned)
    if xp is np and size == 8:
        words = words.reshape(x.shape + (2,))
    return words.astype(xp.uint32)


def _device_leaf_digest(x: jax.Array) -> jax.Array:
    """Two wrapping uint32 sums of the array's bits, plain and weighted by (2 * position + 1):
    any changed value changes them. No reshape, so a sharded array is summed in place."""
    w = _words(x, jnp)
    position = jnp.zeros(w.shape, jnp.uint32)
    stride = 1
    for d in reversed(range(w.ndim)):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, w.shape, d) * jnp.uint32(stride)
        stride = stride * w.shape[d] % 2**32
    weights = position * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * weights, dtype=jnp.uint32)])


def _host_leaf_digest(x: np.ndarray) -> np.ndarray:
    w = _words(np.ascontiguousarray(x), np).reshape(-1)
    weights = np.arange(w.size, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    with np.errstate(over="ignore"):
        return np.stack([np.sum(w, dtype=np.uint32), np.sum(w * weights, dtype=np.uint32)])


# Per leaf through a nested jit, whose trace JAX reuses for every leaf of the same shape and
# dtype: a model's leaves repeat a few shapes (layers, optimizer moments), and tracing the
# digest anew for each of GPT's 163 leaves took 0.6 s of the first save in every run.
_leaf_digest = jax.jit(_device_leaf_digest)
_leaf_finite = jax.jit(lambda x: jnp.all(jnp.isfinite(x)))


@jax.jit
def _device_digests(leaves: list) -> list:
    return [_leaf_digest(x) for x in leaves]


@jax.jit
def _device_all_finite(leaves: list) -> jax.Array:
    finite = [_leaf_finite(x) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(finite)) if finite else jnp.bool_(True)


def _on_devices(leaves: list) -> bool:
    return bool(leaves) and all(isinstance(x, jax.Array) for x in leaves)


class PendingDigest:
    """Checksums being computed on the devices (dispatched, not waited for): `resolve()`
    returns {leaf path: checksum}. The checkpoint's JSON item resolves it in Orbax's
    background thread, so a save does not block the loop for a pass over every array."""

    def __init__(self, names: list[str], values: Any):
        self.names, self.values = names, values

    def resolve(self) -> dict[str, list[int]]:
        values = jax.device_get(self.values)
        return {name: [int(v[0]), int(v[1])] for name, v in zip(self.names, values)}


def start_digest(tree: Any) -> PendingDigest:
    """Starts the checksums of a pytree of jax.Arrays (on the devices, asynchronously) or
    of numpy arrays (on the host, at once); the two kinds agree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    names, leaves = [_path_name(p) for p, _ in flat], [x for _, x in flat]
    if _on_devices(leaves):
        return PendingDigest(names, _device_digests(leaves))
    return PendingDigest(names, [_host_leaf_digest(np.asarray(x)) for x in leaves])


def all_finite(tree: Any) -> bool:
    """Whether every float in the pytree is finite (waits for the answer)."""
    leaves = jax.tree.leaves(tree)
    if _on_devices(leaves):
        return bool(jax.device_get(_device_all_finite(leaves)))
    return all(np.isfinite(x).all() for x in map(np.asarray, leaves) if np.issubdtype(x.dtype, np.inexact))


def digest_and_finite(tree: Any) -> tuple[dict[str, list[int]], bool]:
    """({leaf path: checksum}, whether every float is finite), waiting for both."""
    pending = start_digest(tree)
    return pending.resolve(), all_finite(tree)


def state_digest(tree: Any) -> dict[str, list[int]]:
    """{leaf path: checksum}; see `start_digest`."""
    return start_digest(tree).resolve()


class _HostJsonHandler(ocp.JsonCheckpointHandler):
    """Orbax's JSON item, resolving `PendingDigest` values when the file is written (in
    the background commit), not when `save` is called."""

    async def _save_fn(self, x, directory):
        x = {k: v.resolve() if isinstance(v, PendingDigest) else v for k, v in x.items()}
        await super()._save_fn(x, directory)


@ocp.args.register_with_handler(_HostJsonHandler, for_save=True)
@dataclasses.dataclass
class _HostSave(ocp.args.CheckpointArgs):
    item: Mapping[str, Any]


@ocp.args.register_with_handler(_HostJsonHandler, for_restore=True)
@dataclasses.dataclass
class _HostRestore(ocp.args.CheckpointArgs):
    item: Any = None


def verify_digest(tree: Any, saved: dict[str, list[int]] | None, what: str) -> None:
    """Raises CorruptCheckpointError naming the arrays whose checksums differ."""
    if not saved:
        return  # saved before checksums existed
    bad = [name for name, value in state_digest(tree).items()
           if name in saved and list(saved[name]) != value]
    if bad:
        raise CorruptCheckpointError(
            f"{what}: {len(bad)} array(s) do not match their saved checksum ({', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''})")


class Checkpointer:
    """A thin wrapper over `ocp.CheckpointManager` with Strata's items and policies."""

    def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True, read_only: bool = False):
        """`read_only` (eval, sample): never writes, and leaves the half-written saves of a
        run that is training in the same workdir alone."""
        self.directory = files.absolute(directory)
        self.best_metric = best_metric or None
        self._warned_best = False
        policy = [policies.LatestN(keep)]
        metric_fn = None
        if best_metric:
            metric_fn = lambda m: m[best_metric]  # noqa: E731
            policy.append(policies.BestN(
                get_metric_fn=metric_fn, reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "host": _HostJsonHandler()},
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(policy),
                # With `best_fn` set, Orbax also writes each checkpoint's metrics to disk
                # (<step>/metrics), so the best one is still known after a resume.
                best_fn=metric_fn, best_mode=best_mode,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=not read_only,
                read_only=read_only,
            ),
        )

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any | None,
             metrics: dict[str, float] | None = None, host: dict | None = None,
             digest: PendingDigest | dict[str, list[int]] | None = None, force: bool = True) -> bool:
        """Starts an async save of the state, the iterator position and small host-side
        values (`host`, JSON) with the state's checksums (`digest`, started here if not
        given; written when ready); returns at once unless a previous save is still running."""
        if self.best_metric and metrics is not None and self.best_metric not in metrics:
            if not self._warned_best and jax.process_index() == 0:
                print(f"strata: warning: checkpoint.best_metric {self.best_metric!r} is not among "
                      f"the eval metrics ({', '.join(sorted(metrics))}); only the latest "
                      "checkpoints are kept.", file=sys.stderr, flush=True)
            self._warned_best = True
            metrics = None
        if self.best_metric is None:
            metrics = None
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        digest = digest if digest is not None else start_digest(state)
        items["host"] = _HostSave({**(host or {}), "digest": digest})
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> tuple[Any, dict]:
        """Restores `step` into arrays laid out like `abstract_state` (shapes + shardings);
        moves `data_iterator` to the saved position when given. Returns (state, host values)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        step_dir = os.path.join(self.directory, str(step))
        if files.isdir(os.path.join(step_dir, "host")):
            items["host"] = _HostRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        host = (restored["host"] if "host" in items else None) or {}
        verify_digest(restored["state"], host.get("digest"), f"checkpoint {step}")
        return restored["state"], host

    def set_aside(self, step: int) -> str:
        """Moves an unreadable checkpoint out of the way (never deletes it); returns where."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(os.path.dirname(self.directory), f"checkpoints-unreadable-{step}")
        n = 0
        while files.exists(dst):
            n += 1
            dst = os.path.join(os.path.dirname(self.directory), f"checkpoints-unreadable-{step}.{n}")
        if jax.process_index() == 0:  # one shared filesystem: one process renames
            files.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"strata-set-aside-{step}")
        self.manager.reload()
        return dst

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        # The clean-up of half-written saves runs in a thread from construction on and
        # `close()` does not wait for it; a run that stops early must, or the interpreter
        # shuts down under it.
        wait_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if wait_cleanup is not None:
            wait_cleanup()
        self.manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for `StandardRestore`."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)


def read_state(state_dir: str) -> Any:
    """Any saved state as host numpy arrays, whatever mesh or process count saved it
    (for fine-tuning starts, inspection and tests)."""
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(state_dir)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree,
                          is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    restored = checkpointer.restore(state_dir, target)
    return jax.tree.map(np.asarray, restored)
