"""Orbax checkpoints of the whole run: train state and the Grain iterator position.

Layout: WORKDIR/checkpoints/<step>/{state,data}. Saves are asynchronous (the step loop
goes on while arrays are written); `wait()` blocks until the last one is durable.
The last `keep` checkpoints are kept, plus the best by `best_metric` when one is named.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger("strata")


class Checkpointer:
    """A thin wrapper over `ocp.CheckpointManager` with Strata's items and policies."""

    def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True):
        self.directory = os.path.abspath(directory)
        policy = [policies.LatestN(keep)]
        if best_metric:
            policy.append(policies.BestN(
                get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(policy),
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            ),
        )

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any | None,
             metrics: dict[str, float] | None = None, host: dict | None = None,
             force: bool = True) -> bool:
        """Starts an async save of the state, the iterator position and small host-side
        values (`host`, JSON); returns at once unless a previous save is still running."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if host is not None:
            items["host"] = ocp.args.JsonSave(host)
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> tuple[Any, dict]:
        """Restores `step` into arrays laid out like `abstract_state` (shapes + shardings);
        moves `data_iterator` to the saved position when given. Returns (state, host values)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        step_dir = os.path.join(self.directory, str(step))
        if os.path.isdir(os.path.join(step_dir, "host")):
            items["host"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], (restored["host"] if "host" in items else None) or {}

    def set_aside(self, step: int) -> str:
        """Moves an unreadable checkpoint out of the way (never deletes it); returns where."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(os.path.dirname(self.directory), f"checkpoints-unreadable-{step}")
        n = 0
        while os.path.exists(dst):
            n += 1
            dst = os.path.join(os.path.dirname(self.directory), f"checkpoints-unreadable-{step}.{n}")
        os.rename(src, dst)
        self.manager.reload()
        return dst

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for `StandardRestore`."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)


def read_state(state_dir: str) -> Any:
    """Any saved state as host numpy arrays, whatever mesh or process count saved it
    (for fine-tuning starts, inspection and tests)."""
    import numpy as np
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(state_dir)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree,
                          is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    restored = checkpointer.restore(state_dir, target)
    return jax.tree.map(np.asarray, restored)
