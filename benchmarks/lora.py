"""LoRA vs full fine-tuning of the same GPT: step time and optimizer-state size.

Both contenders are the real path, each in its own worker with Strata's CPU defaults:
`models.gpt.GPT` through `train.step.jit_train_step` with the `language_model` task and
the AdamW chain `train.optimizers.build_optimizer` makes from `configs/gpt2_finetune.py`'s
optimizer section (weight decay, warm-up). "lora" adds rank-8 adapters on the query and
value slots (the paper's setting; `model.lora_train=()`: nothing else trains), so the
optimizer is the `multi_transform` that freezes the rest and the step differentiates only
the adapters. Optimizer-state bytes are summed over the state's arrays after the timing.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import Row, env, interleaved, median, spread, step_runner
from benchmarks.worker import Remote

# GPT-2-small-ish on a CPU: 6 layers, width 384, 6 heads, context 256, batch 8 (bytes).
MODEL = dict(vocab_size=256, num_layers=6, num_heads=6, width=384, mlp_ratio=4, max_len=256)
BATCH = 8
LORA = dict(lora_rank=8, lora_alpha=16.0, lora_targets=("query", "value"))


def contender(lora: bool):
    """run(n): n train steps of the GPT, full fine-tuning or LoRA (a `worker` factory)."""
    import jax
    import jax.numpy as jnp

    from configs import gpt2_finetune
    from models import build_model
    from train import sharding, step as step_lib
    from train.optimizers import build_optimizer, trainable_mask
    from train.state import count_params, count_trainable, create_train_state
    from train.tasks import build_task

    config = gpt2_finetune.get_config()
    model = build_model("gpt", **MODEL, **(LORA if lora else {}))
    trainable = trainable_mask(()) if lora else None
    task = build_task("language_model", vocab_size=MODEL["vocab_size"])
    tx = build_optimizer(config.optimizer, config.train.steps, trainable)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    batch_sharding = sharding.batch_sharding(mesh)
    rng = np.random.default_rng(0)
    host = [rng.integers(0, MODEL["vocab_size"], (BATCH, MODEL["max_len"] + 1), dtype=np.int32)
            for _ in range(4)]
    batches = [{"tokens": jax.device_put(jnp.asarray(b), batch_sharding)} for b in host]
    state, shardings = create_train_state(model, task, tx, {"tokens": host[0][:1]}, 0, False, mesh,
                                          sharding.DEFAULT_RULES)
    step = step_lib.jit_train_step(model, task, tx, shardings, batch_sharding, trainable=trainable)
    run = step_runner(step, state, batches)
    params = run.state().params
    run.extras = {
        "opt_bytes": lambda: sum(int(x.nbytes) for x in jax.tree.leaves(run.state().opt_state)),
        "params": lambda: count_params(params),
        "trainable": lambda: count_trainable(params, trainable) if lora else count_params(params),
    }
    return run


def run(repeats: int = 5, steps: int = 3) -> list[Row]:
    contenders = {name: Remote("benchmarks.lora:contender", kwargs=dict(lora=name == "lora"), env=env())
                  for name in ("full", "lora")}
    try:
        samples = interleaved(contenders, steps=steps, repeats=repeats, warmup=1)
        info = {name: {k: c.call(k) for k in ("opt_bytes", "params", "trainable")}
                for name, c in contenders.items()}
        cpu = {name: median(c.cpu_seconds[-repeats:]) for name, c in contenders.items()}
    finally:
        for c in contenders.values():
            c.close()
    what = (f"GPT L{MODEL['num_layers']} H{MODEL['num_heads']} W{MODEL['width']} T{MODEL['max_len']} "
            f"B{BATCH}, AdamW ({info['full']['params']:,} params)")
    lora, full = info["lora"], info["full"]
    rank = f"LoRA r{LORA['lora_rank']} on query+value"
    return [
        Row("LoRA", f"{what}: step time, {rank} vs full fine-tuning", spread(samples["lora"]),
            spread(samples["full"]), f"{median(samples['lora']) / median(samples['full']):.2f}x",
            f"ratio = LoRA / full; CPU s/step {cpu['lora']:.2f} vs {cpu['full']:.2f}; "
            f"{repeats} interleaved repeats of {steps} steps"),
        Row("LoRA", "same: optimizer-state size", f"{lora['opt_bytes']:,} B", f"{full['opt_bytes']:,} B",
            f"{lora['opt_bytes'] / full['opt_bytes']:.4f}x",
            f"AdamW moments of the trainable parameters only: {lora['trainable']:,} vs {full['trainable']:,}"),
    ]
