"""Accelerator throughput: model FLOPs utilisation of GPT-2 124M and ResNet-50 images/s,
through Strata's real jitted train step (train/step.py) on every local device.

    python -m benchmarks.mfu                       # on a GPU/TPU host: both workloads
    python -m benchmarks.mfu --peak_tflops 312     # a chip the table below does not know
    make bench-accel ACCEL=cuda                    # the same through the Makefile
    python -m benchmarks.mfu --smoke               # CPU: tiny shapes, checks the path runs

Workloads, as the recipes define them (configs/openwebtext_gpt2_124m.py,
configs/imagenet_resnet50.py) with synthetic batches (input speed is not measured here):
GPT-2 small (124M, tied embeddings, bfloat16 compute) at sequence 1024 and
`--gpt_batch` sequences per device; ResNet-50 v1.5 at 224x224 in bfloat16 with
`--resnet_batch` images per device. Each step is timed over `--steps` steps after
`--warmup`, synchronised on the result.

MFU = model FLOPs per second / (peak bf16 FLOP/s per chip x chips). Model FLOPs per token of
the GPT are nanoGPT's / PaLM's count, 6 N + 12 L H Q T (N parameters without the position
table, L layers, H heads, Q head size, T sequence); ResNet-50 reports images/s and XLA's
cost analysis of the compiled step as achieved TFLOP/s (there the "model FLOPs" are the
compiled program's). The peak comes from the device kind (`PEAK_TFLOPS`) or `--peak_tflops`.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

# bf16 dense peak TFLOP/s per jax device, from the vendors' datasheets (a TPU v3 chip is two
# devices of 61.5; v4 and v5p chips are one device each).
PEAK_TFLOPS = {
    "NVIDIA A100-SXM4-40GB": 312, "NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100 80GB PCIe": 312,
    "NVIDIA H100 80GB HBM3": 989, "NVIDIA H100 PCIe": 756, "NVIDIA H200": 989,
    "NVIDIA L4": 121, "TPU v3": 61.5, "TPU v4": 275, "TPU v5 lite": 197, "TPU v5": 459,
    "TPU v6 lite": 918,
}


def peak_flops(device_kind: str, given_tflops: float) -> float | None:
    """Peak bf16 FLOP/s of one device: `given_tflops` when > 0, else the table's entry."""
    if given_tflops > 0:
        return given_tflops * 1e12
    for kind, tflops in PEAK_TFLOPS.items():
        if device_kind.startswith(kind):
            return tflops * 1e12
    return None


def _step_and_inputs(config_name: str, per_device: int, overrides: dict):
    """(jitted train step, state, batch, number of devices, flops per step (XLA), config)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from models import build_model
    from train import sharding as sharding_lib, state as state_lib, step as step_lib
    from train.optimizers import build_optimizer
    from train.tasks import build_task

    c = importlib.import_module(f"configs.{config_name}").get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    n = jax.device_count()
    mesh = sharding_lib.make_mesh(data=n, fsdp=1, tensor=1)
    rules = sharding_lib.rules_from_config(c.mesh.rules)
    model, task = build_model(**c.model.to_dict()), build_task(**c.task.to_dict())
    tx = build_optimizer(c.optimizer, c.train.steps)
    rng = np.random.default_rng(0)
    if c.task.name == "language_model":
        tokens = rng.integers(0, c.model.vocab_size, (per_device * n, c.model.max_len + 1), np.int32)
        batch = {"tokens": tokens}
    else:
        batch = {"image": rng.normal(size=(per_device * n, 224, 224, 3)).astype(np.float32),
                 "label": rng.integers(0, c.task.num_classes, (per_device * n,), np.int32)}
    batch_sharding = sharding_lib.batch_sharding(mesh)
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()}, batch_sharding)
    state, shardings = state_lib.create_train_state(model, task, tx, batch, c.seed, False, mesh, rules)
    step = step_lib.jit_train_step(model, task, tx, shardings, batch_sharding)
    cost = step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return step, state, batch, n, float(cost.get("flops", 0.0)), c


def time_steps(step, state, batch, warmup: int, steps: int) -> float:
    """Median seconds of one step after `warmup` steps (each synchronised on the loss)."""
    import jax
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gpt_flops_per_token(c) -> float:
    """nanoGPT's estimate_mfu: 6 N + 12 L H Q T per token (N without the position table)."""
    m = c.model
    d, layers, t = m.width, m.num_layers, m.max_len
    per_layer = 2 * 2 * d + 3 * (d * d + d) + (d * d + d) + 2 * (d * m.mlp_ratio * d) + m.mlp_ratio * d + d
    n = m.vocab_size * d + layers * per_layer + 2 * d + (0 if m.tie_embeddings else d * m.vocab_size)
    return 6 * n + 12 * layers * m.num_heads * (d // m.num_heads) * t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peak_tflops", type=float, default=0.0, help="bf16 peak per chip; 0 = from the device kind")
    p.add_argument("--gpt_batch", type=int, default=16, help="sequences of 1024 per device")
    p.add_argument("--resnet_batch", type=int, default=128, help="images per device")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", default="gpt,resnet")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, for checking the path on CPU")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import jax
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind, args.peak_tflops)
    if peak is None and device.platform != "cpu":
        print(f"benchmarks.mfu: error: no peak FLOP/s known for {device.device_kind!r}; "
              "pass --peak_tflops (bf16 dense, per chip).", file=sys.stderr)
        return 2
    print(f"device: {jax.device_count()} x {device.device_kind} ({device.platform}), peak "
          f"{peak / 1e12 if peak else float('nan'):.1f} TFLOP/s bf16 per chip")
    gpt_over = {"train.steps": 1000}
    resnet_over = {"train.steps": 1000}
    if args.smoke:
        gpt_over.update({"model.max_len": 64, "model.num_layers": 2, "model.width": 64, "model.num_heads": 2})
        resnet_over.update({"model.depth": 18})
        args.gpt_batch, args.resnet_batch, args.warmup, args.steps = 2, 2, 1, 2
    rows = []
    if "gpt" in args.only:
        step, state, batch, n, xla_flops, c = _step_and_inputs("openwebtext_gpt2_124m", args.gpt_batch, gpt_over)
        seconds = time_steps(step, state, batch, args.warmup, args.steps)
        tokens = args.gpt_batch * n * c.model.max_len
        model_flops = gpt_flops_per_token(c) * tokens
        rows.append(("GPT-2 124M" + (" (smoke shapes)" if args.smoke else ""),
                     f"{tokens / seconds:,.0f} tokens/s", seconds, model_flops, xla_flops, n))
    if "resnet" in args.only:
        step, state, batch, n, xla_flops, c = _step_and_inputs("imagenet_resnet50", args.resnet_batch, resnet_over)
        seconds = time_steps(step, state, batch, args.warmup, args.steps)
        rows.append(("ResNet-50 224px" + (" (smoke: ResNet-18)" if args.smoke else ""),
                     f"{args.resnet_batch * n / seconds:,.0f} images/s", seconds, xla_flops, xla_flops, n))
    print("| workload | throughput | step | model TFLOP/s | MFU | XLA TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, rate, seconds, model_flops, xla_flops, n in rows:
        mfu = f"{model_flops / seconds / (peak * n):.1%}" if peak else "n/a (no peak)"
        print(f"| {name} | {rate} | {seconds * 1e3:.1f} ms | {model_flops / seconds / 1e12:.2f} | {mfu} | "
              f"{xla_flops / seconds / 1e12:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
