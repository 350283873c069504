"""LM training throughput: Strata's GPT train step vs the PyTorch reference, and model
FLOP/s against the measured matmul peak.

Strata's side is the real path: `models.gpt.GPT` through `train.step.jit_train_step` with
the `language_model` task and the AdamW chain `train.optimizers.build_optimizer` makes
from `configs/text_gpt.py`'s optimizer section (AdamW, decay on matrices, global-norm
clipping). Model FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B):
6N + 12 L H Q T, with N the parameters outside the embedding tables (the head counts;
the token and position tables are lookups). The peak is a jitted float32 2048x2048
matmul timed in the same Strata process.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import NO_TORCH, Row, env, interleaved, median, spread, step_runner, torch_installed
from benchmarks.worker import Remote

# The configuration of the issue: 4 layers, 4 heads, width 128, context 64, batch 12.
MODEL = dict(vocab_size=256, num_layers=4, num_heads=4, width=128, mlp_ratio=4, max_len=64)
BATCH = 12


def _host_batches(model_fields: dict, batch_size: int, n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, model_fields["vocab_size"], (batch_size, model_fields["max_len"] + 1),
                         dtype=np.int32) for _ in range(n)]


def _optimizer_config():
    from configs import text_gpt
    config = text_gpt.get_config()
    return config.optimizer, config.train.steps


def model_flops_per_token(params, fields: dict) -> float:
    """PaLM's 6N + 12 L H Q T with N = parameters outside the embedding tables."""
    import jax
    n = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
            if not any(getattr(k, "key", None) in ("token_embed", "pos_embed") for k in path))
    head_dim = fields["width"] // fields["num_heads"]
    return 6 * n + 12 * fields["num_layers"] * fields["num_heads"] * head_dim * fields["max_len"]


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted float32 n x n matmul: the best of `repeats` timings of 4 calls
    (the least disturbed by other processes)."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()

    def run(k):
        for _ in range(k):
            out = f(a, b)
        out.block_until_ready()
    samples = interleaved({"matmul": run}, steps=4, repeats=repeats)["matmul"]
    return 2 * n**3 / min(samples)


def strata_contender(model_fields: dict | None = None, batch_size: int = BATCH):
    """run(n): n Strata train steps on in-memory batches (a `worker` factory)."""
    import jax
    import jax.numpy as jnp

    from models import build_model
    from train import sharding, step as step_lib
    from train.optimizers import build_optimizer
    from train.state import create_train_state
    from train.tasks import build_task

    fields = model_fields or MODEL
    optimizer, total_steps = _optimizer_config()
    model = build_model("gpt", **fields)
    task = build_task("language_model", vocab_size=fields["vocab_size"])
    tx = build_optimizer(optimizer, total_steps)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    batch_sharding = sharding.batch_sharding(mesh)
    host = _host_batches(fields, batch_size)
    batches = [{"tokens": jax.device_put(jnp.asarray(b), batch_sharding)} for b in host]
    state, shardings = create_train_state(model, task, tx, {"tokens": host[0][:1]}, 0, False, mesh,
                                          sharding.DEFAULT_RULES)
    step = step_lib.jit_train_step(model, task, tx, shardings, batch_sharding)
    run = step_runner(step, state, batches)

    run.extras = {"peak": lambda: matmul_peak(),
                  "flops_per_token": lambda: model_flops_per_token(run.state().params, fields)}
    return run


def torch_contender(model_fields: dict | None = None, batch_size: int = BATCH):
    """run(n): n steps of the PyTorch reference, same model, optimizer and batches."""
    import torch

    from benchmarks import torch_ref
    from benchmarks.common import pick_torch_threads
    fields = model_fields or MODEL
    oc, _ = _optimizer_config()
    torch.manual_seed(0)
    model = torch_ref.GPT(**fields).train()
    opt = torch_ref.adamw(model, oc.learning_rate, oc.b1, oc.b2, oc.get("eps", 1e-8), oc.weight_decay)
    batches = [torch.from_numpy(b.astype(np.int64)) for b in _host_batches(fields, batch_size)]
    clip = oc.get("grad_clip", 0.0)

    def run(k):
        for i in range(k):
            torch_ref.lm_step(model, opt, batches[i % len(batches)], clip)

    threads = pick_torch_threads(run, steps=3)
    run.extras = {"threads": lambda: threads}
    return run


def run(repeats: int = 7, steps: int = 10) -> list[Row]:
    contenders = {"strata": Remote("benchmarks.lm:strata_contender", env=env())}
    contenders["strata_plain"] = Remote("benchmarks.lm:strata_contender", env=env(strata_defaults=False))
    if torch_installed():
        contenders["torch"] = Remote("benchmarks.lm:torch_contender", env=env(strata_defaults=False))
    try:
        peak = contenders["strata"].call("peak")
        samples = interleaved(contenders, steps=steps, repeats=repeats, warmup=1)
        peak = max(peak, contenders["strata"].call("peak"))  # before and after the timing
        flops_token = contenders["strata"].call("flops_per_token")
        threads = contenders["torch"].call("threads") if "torch" in contenders else None
    finally:
        for c in contenders.values():
            c.close()
    tokens = BATCH * MODEL["max_len"]
    flops = flops_token * tokens
    s_time = median(samples["strata"])
    what = (f"GPT L{MODEL['num_layers']} H{MODEL['num_heads']} W{MODEL['width']} T{MODEL['max_len']} "
            f"B{BATCH}, AdamW step")
    rows = []
    tok = lambda key: f"{tokens / median(samples[key]):,.0f} tok/s ({spread(samples[key])})"  # noqa: E731
    if "torch" in samples:
        t_time = median(samples["torch"])
        rows.append(Row("LM", what + ": tokens/s", tok("strata"), tok("torch"), f"{t_time / s_time:.2f}x",
                        f"ratio = Strata tokens/s / PyTorch's (goal >= 1.5x); PyTorch eager, "
                        f"{threads} thread(s) (the faster of 1 and all here)"))
    else:
        rows.append(Row("LM", what + ": tokens/s", tok("strata"), note=NO_TORCH))
    plain = median(samples["strata_plain"])
    rows.append(Row("LM", "same, Strata without its CPU defaults (STRATA_CPU_DEFAULTS=0)", tok("strata_plain"),
                    "", f"{plain / s_time:.2f}x", "ratio = with defaults / without"))
    ref = ""
    if "torch" in samples:
        tf = flops / median(samples["torch"])
        ref = f"{tf / 1e9:.1f} GFLOP/s ({tf / peak:.0%})"
    rows.append(Row("LM", f"model FLOP/s (6N + 12LHQT = {flops_token / 1e6:.2f} MFLOP/token) vs matmul peak",
                    f"{flops / s_time / 1e9:.1f} GFLOP/s ({flops / s_time / peak:.0%} of peak)", ref, "",
                    "goal >= 60% of peak"))
    rows.append(Row("LM", "matmul peak: jitted f32 2048x2048 (Strata process)", f"{peak / 1e9:.1f} GFLOP/s",
                    note="best of 5 timings before and 5 after the LM timing"))
    return rows
