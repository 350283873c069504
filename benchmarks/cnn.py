"""CNN training step: Strata's ResNet-18 (CIFAR stem) vs the PyTorch reference.

Strata's side is `models.resnet.ResNet(depth=18, family="imagenet", stem="cifar")` through
`train.step.jit_train_step` with the classification task and the SGD chain that
`train.optimizers.build_optimizer` makes from `configs/digits_resnet.py`'s optimizer
section (Nesterov momentum, weight decay on kernels). PyTorch runs its fastest layout,
channels_last. Batch 64 of 32x32x3 images, 10 classes.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import NO_TORCH, Row, env, interleaved, median, spread, step_runner, torch_installed
from benchmarks.worker import Remote

MODEL = dict(depth=18, family="imagenet", stem="cifar", num_classes=10)
BATCH, SIZE = 64, 32


def _host_batches(batch_size: int, n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch_size, SIZE, SIZE, 3), dtype=np.float32),
             rng.integers(0, 10, (batch_size,), dtype=np.int32)) for _ in range(n)]


def strata_contender(batch_size: int = BATCH):
    """run(n): n Strata ResNet-18 SGD steps on in-memory batches (a `worker` factory)."""
    import jax

    from configs import digits_resnet
    from models import build_model
    from train import sharding, step as step_lib
    from train.optimizers import build_optimizer
    from train.state import create_train_state
    from train.tasks import build_task

    config = digits_resnet.get_config()
    model = build_model("resnet", **MODEL)
    task = build_task("classification", num_classes=10)
    tx = build_optimizer(config.optimizer, config.train.steps)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    batch_sharding = sharding.batch_sharding(mesh)
    host = _host_batches(batch_size)
    batches = [{"image": jax.device_put(x, batch_sharding), "label": jax.device_put(y, batch_sharding)}
               for x, y in host]
    state, shardings = create_train_state(model, task, tx, {"image": host[0][0][:1], "label": host[0][1][:1]},
                                          0, False, mesh, sharding.DEFAULT_RULES)
    step = step_lib.jit_train_step(model, task, tx, shardings, batch_sharding)
    run = step_runner(step, state, batches)
    return run


def torch_contender(batch_size: int = BATCH, channels_last: bool = True):
    """run(n): n PyTorch ResNet-18 SGD steps (the same optimizer settings)."""
    import torch

    from benchmarks import torch_ref
    from configs import digits_resnet
    oc = digits_resnet.get_config().optimizer
    torch.manual_seed(0)
    model = torch_ref.ResNet18().train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch_ref.sgd(model, oc.learning_rate, oc.momentum, oc.nesterov, oc.weight_decay)
    batches = [(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt),
                torch.from_numpy(y.astype(np.int64))) for x, y in _host_batches(batch_size)]

    def run(k):
        for i in range(k):
            x, y = batches[i % len(batches)]
            torch_ref.classification_step(model, opt, x, y)

    from benchmarks.common import pick_torch_threads
    threads = pick_torch_threads(run, steps=1)
    run.extras = {"threads": lambda: threads}
    return run


def run(repeats: int = 3, steps: int = 1, ablate: bool = True) -> list[Row]:
    contenders = {"strata": Remote("benchmarks.cnn:strata_contender", env=env())}
    if ablate:
        contenders["strata_plain"] = Remote("benchmarks.cnn:strata_contender", env=env(strata_defaults=False))
    if torch_installed():
        contenders["torch"] = Remote("benchmarks.cnn:torch_contender", env=env(strata_defaults=False))
    try:
        samples = interleaved(contenders, steps=steps, repeats=repeats, warmup=1)
        threads = contenders["torch"].call("threads") if "torch" in contenders else None
    finally:
        for c in contenders.values():
            c.close()
    what = f"ResNet-18 (CIFAR stem) B{BATCH} {SIZE}x{SIZE}x3, SGD step: time"
    s_time = median(samples["strata"])
    rows = []
    if "torch" in samples:
        t_time = median(samples["torch"])
        rows.append(Row("CNN", what, spread(samples["strata"]), spread(samples["torch"]),
                        f"{s_time / t_time:.2f}x",
                        f"ratio = Strata time / PyTorch's (goal <= 1.0x); PyTorch eager channels_last, "
                        f"{threads} thread(s) (the faster of 1 and all here); {repeats} repeats"))
    else:
        rows.append(Row("CNN", what, spread(samples["strata"]), note=NO_TORCH))
    if ablate:
        plain = median(samples["strata_plain"])
        rows.append(Row("CNN", "same, Strata without its CPU defaults (STRATA_CPU_DEFAULTS=0)",
                        spread(samples["strata_plain"]), "", f"{s_time / plain:.2f}x",
                        "ratio = with defaults / without (time)"))
    return rows
