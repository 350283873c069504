"""Sampling speed: LM tokens/s through `train.tasks.lm_generate.generate` (the KV cache,
the decode loop inside one jitted call per cache window, batch 1, as `run.py sample` does), and DDPM images/s
through `train.tasks.diffusion.Diffusion.generate` (DDIM with classifier-free guidance, as
configured in configs/digits_ddpm.py). Parameters are freshly initialised: speed does not
depend on training. Compilation is excluded (a warm-up call first)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from benchmarks.common import Row, env, median
from benchmarks.worker import REPO, Remote


def sampling_worker():
    def run(k):
        pass

    def lm(num_tokens: int = 256, repeats: int = 3) -> dict:
        import jax
        from configs import text_gpt
        from models import build_model
        from train.tasks.language_model import SEED_TOKEN
        from train.tasks.lm_generate import generate
        config = text_gpt.get_config()
        fields = {k: v for k, v in config.model.items() if k != "name"}
        model = build_model("gpt", **fields)
        import jax.numpy as jnp
        import flax.linen as nn
        params = nn.unbox(jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                                     train=False))()["params"])
        gen = lambda n: generate(model, {"params": params}, [SEED_TOKEN], n, temperature=0.8,  # noqa: E731
                                 top_k=0, rng=jax.random.key(1))
        gen(num_tokens)  # compiles the prefill, the one-token step and the window slide
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            gen(num_tokens)
            times.append(time.perf_counter() - t)
        return {"tokens_per_s": num_tokens / median(times), "max_len": model.max_len,
                "layers": model.num_layers, "width": model.width}

    def ddpm(per_class: int = 10, repeats: int = 2) -> dict:
        import jax
        import numpy as np
        from benchmarks.loop import _load_config
        from train.loop import Experiment
        config = _load_config("configs/digits_ddpm.py")
        workdir = tempfile.mkdtemp(prefix="strata-bench-ddpm-")
        try:
            exp = Experiment(config, workdir)
            state = exp.fresh_state()
            ctx = exp.context(state, jax.random.PRNGKey(config.sample.seed))
            labels = np.repeat(np.arange(config.task.num_classes), per_class)
            exp.task.generate(ctx, labels, config.sample)  # compile
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                exp.task.generate(ctx, labels, config.sample)
                times.append(time.perf_counter() - t)
            exp.checkpointer.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return {"images_per_s": len(labels) / median(times), "n": len(labels),
                "sampler": config.sample.sampler, "steps": config.sample.steps,
                "guidance": config.sample.guidance}

    run.extras = {"lm": lm, "ddpm": ddpm}
    return run


def run(repeats: int = 3) -> list[Row]:
    rows = []
    with Remote("benchmarks.sampling:sampling_worker", env=env()) as w:
        m = w.call("lm", repeats=repeats)
        rows.append(Row("sampling", f"LM (configs/text_gpt.py: {m['layers']} layers, width {m['width']}, "
                                    f"context {m['max_len']}) with the KV cache, batch 1",
                        f"{m['tokens_per_s']:,.0f} tokens/s",
                        note="train.tasks.lm_generate.generate: the decode loop in one jitted "
                             "while_loop per cache window (3 windows for 256 tokens at context 128)"))
        if os.path.exists(os.path.join(REPO, "train", "tasks", "diffusion.py")):
            d = w.call("ddpm", repeats=max(2, repeats - 1))
            rows.append(Row("sampling", f"DDPM (configs/digits_ddpm.py, {d['sampler']} {d['steps']} steps, "
                                        f"guidance {d['guidance']:g}), {d['n']} images",
                            f"{d['images_per_s']:,.1f} images/s", note="Diffusion.generate, one jitted scan"))
        else:
            rows.append(Row("sampling", "DDPM", "skipped", note="train/tasks/diffusion.py does not exist"))
    return rows
