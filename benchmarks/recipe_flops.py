"""Parameters and FLOPs per example of the image recipes (README.md, "Recipes").

    python -m benchmarks.recipe_flops [NAME ...]

FLOPs come from XLA's cost analysis of the compiled forward + backward pass (the
gradient of the summed outputs w.r.t. the parameters, in training mode) on a batch of 2,
divided by 2; the optimizer update adds a few FLOPs per parameter and is left out.
"""
from __future__ import annotations

import importlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from models import build_model

SHAPES = {"cifar10_resnet56": (32, 32, 3), "imagenet_resnet50": (224, 224, 3),
          "imagenet_vit_s16": (224, 224, 3), "cifar10_ddpm": (32, 32, 3)}
BATCH = 2


def measure(name: str) -> dict:
    """{params, train GFLOPs per example, compile seconds} of the recipe's exact network."""
    c = importlib.import_module(f"configs.{name}").get_config()
    c.model.dtype = "float32"
    model = build_model(**c.model.to_dict())
    x = jnp.zeros((BATCH, *SHAPES[name]), jnp.float32)
    extra = (jnp.zeros((BATCH,), jnp.int32),) if c.model.name == "unet" else ()
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, *extra, train=False))
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(p, rest, x, *extra):
        out = model.apply({"params": p, **rest}, x, *extra, train=True, mutable=list(rest),
                          rngs={"dropout": jax.random.PRNGKey(0)})
        return jnp.sum(out[0] if isinstance(out, tuple) else out)

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss)).lower(params, rest, x, *extra).compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return {"params": count, "gflops_per_example": cost["flops"] / BATCH / 1e9, "compile_s": seconds}


def main(names: list[str]) -> None:
    for name in names or list(SHAPES):
        r = measure(name)
        print(f"{name:20s} params {r['params']:>11,d}  train GFLOPs/example {r['gflops_per_example']:8.2f}"
              f"  (compile {r['compile_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
