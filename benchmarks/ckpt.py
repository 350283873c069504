"""Checkpointing: how long `train.checkpoints.Checkpointer.save` blocks the loop, how long
until the save is durable, and how long a restore takes, for the default config's state
(digits_resnet: ResNet-20 + SGD momentum, with the Grain iterator position) and for a
100M-parameter GPT (12 layers, width 768, vocabulary 9,600) with its AdamW moments.
The reference column is torch.save / torch.load of a same-size PyTorch state (model +
AdamW state_dict), which is synchronous.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from benchmarks.common import Row, env, median, torch_installed
from benchmarks.worker import Remote

BIG_GPT = dict(vocab_size=9600, num_layers=12, num_heads=12, width=768, mlp_ratio=4, max_len=256)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _randomized_optimizer_state(state):
    """The state with every float optimizer-state array filled with small random values,
    as after training (a fresh state's zero moments compress to nothing on disk)."""
    import jax
    import jax.numpy as jnp
    leaves, treedef = jax.tree.flatten(state.opt_state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    leaves = [jax.random.normal(k, x.shape, x.dtype) * 1e-3
              if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim else x for k, x in zip(keys, leaves)]
    return state.replace(opt_state=jax.tree.unflatten(treedef, leaves))


def _time_checkpointer(state, abstract, data_iter, repeats: int) -> dict:
    """The first save (it also compiles the checksum function) apart, then `repeats`."""
    import jax

    from train import checkpoints
    root = tempfile.mkdtemp(prefix="strata-bench-ckpt-")
    try:
        ckpt = checkpoints.Checkpointer(os.path.join(root, "checkpoints"), keep=2)
        blocking, total, restore, digest = [], [], [], []
        for r in range(repeats + 1):
            # What the loop does at a save: the finite check (waited for), the checksums
            # (dispatched; the background save writes them once computed), the save.
            t = time.perf_counter()
            if not checkpoints.all_finite(state):
                raise RuntimeError("benchmark state is not finite")
            checksums = checkpoints.start_digest(state)
            digest.append(time.perf_counter() - t)
            ckpt.save(r + 1, state, data_iter, host={"window": []}, digest=checksums)
            blocking.append(time.perf_counter() - t)
            ckpt.wait()
            total.append(time.perf_counter() - t)
        first_blocking, blocking, total = blocking[0], blocking[1:], total[1:]
        size = _dir_bytes(os.path.join(root, "checkpoints", str(repeats + 1)))
        target = checkpoints.abstract_with_shardings(*abstract)
        for _ in range(repeats):
            t = time.perf_counter()
            restored, _ = ckpt.restore(repeats + 1, target, data_iter)
            jax.block_until_ready(restored)
            restore.append(time.perf_counter() - t)
            del restored
        ckpt.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"first_blocking": first_blocking, "blocking": median(blocking), "total": median(total),
            "digest": median(digest[1:]),
            "restore": median(restore), "bytes": size}


def _step_seconds(exp, config, steps: int = 30) -> float:
    """Seconds per train step of `exp` (jitted, batches on device), after a warm-up."""
    import jax

    from train import step as step_lib
    from train.sharding import to_global
    it = exp.train_iterator()
    batches = [to_global(next(it), exp.mesh) for _ in range(4)]
    step = step_lib.jit_train_step(exp.model, exp.task, exp.tx, exp.state_shardings, exp.batch_sharding,
                                   ema_decay=config.train.get("ema_decay", 0.0),
                                   grad_accum=config.train.get("grad_accum", 1))
    state = exp.fresh_state()
    for i in range(3):
        state, _ = step(state, batches[i % 4])
    jax.block_until_ready(state)
    t = time.perf_counter()
    for i in range(steps):
        state, _ = step(state, batches[i % 4])
    jax.block_until_ready(state)
    return (time.perf_counter() - t) / steps


def strata_checkpoints():
    """A worker factory whose extras time the two states."""
    def run(k):  # nothing to step
        pass

    def default(repeats: int = 3):
        from benchmarks.loop import CONFIG, _load_config
        from train.loop import Experiment
        from train.state import count_params
        workdir = tempfile.mkdtemp(prefix="strata-bench-ckpt-exp-")
        try:
            config = _load_config(CONFIG)
            exp = Experiment(config, workdir)
            state = _randomized_optimizer_state(exp.fresh_state())
            out = _time_checkpointer(state, (exp.abstract_state, exp.state_shardings),
                                     exp.train_iterator(), repeats)
            out["params"] = count_params(state.params)
            out["step_seconds"] = _step_seconds(exp, config)
            out["checkpoint_every"] = config.train.checkpoint_every
            exp.checkpointer.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return out

    def big(repeats: int = 2):
        import jax
        import numpy as np

        from configs import text_gpt
        from models import build_model
        from train import sharding
        from train.optimizers import build_optimizer
        from train.state import count_params, create_train_state
        from train.tasks import build_task
        config = text_gpt.get_config()
        model = build_model("gpt", **BIG_GPT)
        task = build_task("language_model", vocab_size=BIG_GPT["vocab_size"])
        tx = build_optimizer(config.optimizer, config.train.steps)
        mesh = sharding.make_mesh(devices=jax.devices()[:1])
        example = {"tokens": np.zeros((1, BIG_GPT["max_len"] + 1), np.int32)}
        state, shardings = create_train_state(model, task, tx, example, 0, False, mesh, sharding.DEFAULT_RULES)
        state = _randomized_optimizer_state(state)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        out = _time_checkpointer(state, (abstract, shardings), None, repeats)
        out["params"] = count_params(state.params)
        return out

    run.extras = {"default": default, "big": big}
    return run


def torch_checkpoint(repeats: int = 2) -> dict:
    """torch.save + torch.load of a GPT of BIG_GPT's size with AdamW moments."""
    import torch

    from benchmarks import torch_ref
    model = torch_ref.GPT(**BIG_GPT)
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():  # the AdamW state, random as after training
        opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p) * 1e-3,
                        "exp_avg_sq": torch.randn_like(p) * 1e-3}
    root = tempfile.mkdtemp(prefix="strata-bench-torchckpt-")
    path = os.path.join(root, "ckpt.pt")
    save, load = [], []
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
            os.sync()
            save.append(time.perf_counter() - t)
        for _ in range(repeats):
            t = time.perf_counter()
            sd = torch.load(path)
            model.load_state_dict(sd["model"])
            opt.load_state_dict(sd["opt"])
            load.append(time.perf_counter() - t)
        size = os.path.getsize(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"total": median(save), "restore": median(load), "bytes": size}


def torch_worker():
    def run(k):
        pass
    run.extras = {"big": torch_checkpoint}
    return run


def run(repeats: int = 3) -> list[Row]:
    with Remote("benchmarks.ckpt:strata_checkpoints", env=env()) as w:
        small = w.call("default", repeats=repeats)
        big = w.call("big", repeats=max(2, repeats - 1))
    ref = None
    if torch_installed():
        with Remote("benchmarks.ckpt:torch_worker", env=env(strata_defaults=False)) as w:
            ref = w.call("big", repeats=max(2, repeats - 1))
    fmt = lambda d: (f"save blocks the loop {d['blocking']:.3f} s (of which finite check {d['digest']:.3f} s; "  # noqa: E731
                     f"first save {d['first_blocking']:.2f} s), "
                     f"durable after {d['total']:.2f} s, restore {d['restore']:.2f} s ({d['bytes'] / 1e6:,.0f} MB)")
    interval = small["checkpoint_every"] * small["step_seconds"]
    rows = [Row("checkpoint", f"default config (digits_resnet, {small['params']:,} params, SGD state + "
                "data iterator), async Orbax", fmt(small), "",
                f"{small['blocking'] / interval:.2%} of the time between saves",
                f"goal <= 1%: blocking / ({small['checkpoint_every']} steps x {1e3 * small['step_seconds']:.1f} ms); "
                f"median of {repeats} after a first save, which also compiles the checksum "
                "function (run.py compiles it at start-up)")]
    ref_cell = ""
    if ref:
        ref_cell = (f"torch.save {ref['total']:.2f} s (synchronous), torch.load {ref['restore']:.2f} s "
                    f"({ref['bytes'] / 1e6:,.0f} MB)")
    rows.append(Row("checkpoint", f"GPT 12x768 ({big['params'] / 1e6:.0f}M params + AdamW moments), async Orbax",
                    fmt(big), ref_cell, "", f"median of {max(2, repeats - 1)}; moments random as after training "
                    "(zeros would compress away); each save also checksums every array, in the background"))
    return rows
