"""ImageNet-style host pipeline throughput: Strata's ops vs a plain PIL loop.

    python -m benchmarks.image_pipeline [--images 200] [--batch 32] [--repeats 3] [--recipes]

Both sides do the same work per image on one thread: decode a JPEG of ImageNet's typical
size (the mean ImageNet image is ~400x350; these are 500x375 and 375x500, quality 90),
an Inception random-resized crop to 224 (bilinear, antialiased), a random horizontal flip
and RandAugment(2, 10) with the same Pillow operations (data/randaugment.py AUGMENTS).
Strata runs the spec "decode|random_resized_crop(224)|randaugment(2, 10)|flip_lr" as the
pipeline does (per-example stage, stack, batched flip); the plain loop calls Pillow
directly with Python's `random`. Reported: images/s of wall time and CPU seconds per
image, best and median over the repeats, the two sides alternating (on a shared machine
the CPU time is the steadier number; images/s per core = 1 / CPU seconds per image, as
both sides use one thread).
"""
from __future__ import annotations

import argparse
import io
import math
import random
import time

import numpy as np
from PIL import Image, ImageOps

SPEC = "decode|random_resized_crop(224)|randaugment(2, 10)|flip_lr"


def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """`n` JPEGs of 500x375 or 375x500 with smooth structure and noise (JPEG-realistic sizes)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (375, 500) if i % 2 else (500, 375)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(x / (7 + i % 5)), 255 * y / h,
                         128 + 80 * np.cos((x + y) / 11)], -1)
        img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# Recipes whose host load is estimated: config name -> the source's training time in hours
# (the Flax ImageNet example's v3-8 run; big_vision's "6-7h" for ViT-S/16, taken as 6.5).
RECIPE_HOURS = {"imagenet_resnet50": 4.4, "imagenet_vit_s16": 6.5}


def strata(jpegs: list[bytes], batch: int, spec: str = SPEC) -> None:
    from data import ops
    stages = ops.parse(spec)
    example_op, batch_op = ops.chain(stages.example), ops.chain(stages.batch)
    for start in range(0, len(jpegs), batch):
        rows = [{"image": np.array(j, dtype=object), "label": np.int64(i % 1000)}
                for i, j in enumerate(jpegs[start:start + batch], start)]
        positions = np.arange(start, start + len(rows))
        examples = ops.map_examples(example_op, rows, seed=0, positions=positions)
        batch_op(ops.stack(examples), ops.RowRandom(0, positions))


def plain_pil(jpegs: list[bytes], batch: int) -> None:
    from data.randaugment import AUGMENTS, NAMES
    rnd = random.Random(0)
    for start in range(0, len(jpegs), batch):
        out = []
        for data in jpegs[start:start + batch]:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            w, h = img.size
            for _ in range(10):  # torchvision's RandomResizedCrop box
                area = w * h * rnd.uniform(0.08, 1.0)
                aspect = math.exp(rnd.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < cw <= w and 0 < ch <= h:
                    top, left = rnd.randint(0, h - ch), rnd.randint(0, w - cw)
                    break
            else:
                ch, cw, top, left = min(h, w), min(h, w), (h - min(h, w)) // 2, (w - min(h, w)) // 2
            img = img.resize((224, 224), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            for _ in range(2):
                img = AUGMENTS[rnd.choice(NAMES)](img, 1.0, rnd.choice((-1.0, 1.0)),
                                                   np.array([rnd.random(), rnd.random()]))
            if rnd.random() < 0.5:
                img = ImageOps.mirror(img)
            out.append(np.asarray(img))
        np.stack(out)


def timed(fns: dict, jpegs: list[bytes], batch: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    """name -> (images per second of wall time, CPU seconds per image: best, median).

    The sides alternate within each repeat, so a change in the machine's load reaches both.
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn(jpegs, batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs[name].append((len(jpegs) / wall, cpu / len(jpegs)))
    return {name: (max(r[0] for r in rs), min(r[1] for r in rs), float(np.median([r[1] for r in rs])))
            for name, rs in runs.items()}


def recipe_cores(jpegs: list[bytes], batch: int, repeats: int) -> None:
    """Host cores each ImageNet recipe needs at its source's speed: the images/s of its
    published run (the config's steps x batch over the source's hours) times Strata's CPU
    seconds per image on the recipe's own training spec."""
    import importlib
    for name, hours in RECIPE_HOURS.items():
        c = importlib.import_module(f"configs.{name}").get_config("")
        spec = c.data.preprocess
        _, cpu, median = timed({name: lambda j, b: strata(j, b, spec)}, jpegs, batch, repeats)[name]
        images = c.train.steps * c.train.batch_size
        rate = images / (hours * 3600)
        print(f"{name}: {spec!r}\n  {cpu * 1e3:.2f} ms CPU/image (median {median * 1e3:.2f}) -> "
              f"{1 / cpu:.0f} images/s per core; source: {c.train.steps:,d} steps x {c.train.batch_size} "
              f"= {images:,d} images in {hours} h = {rate:,.0f} images/s -> {rate:,.0f} x "
              f"{cpu * 1e3:.2f} ms = {rate * cpu:.1f} cores (median: {rate * median:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", action="store_true",
                        help="also: host cores the ImageNet recipes need at their source's speed")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits
    jpegs = make_jpegs(args.images)
    print(f"{args.images} JPEGs, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB; spec {SPEC!r}")
    with threadpool_limits(1):
        strata(jpegs[:8], 8)  # warm-up: imports, scipy-free, Pillow plugins
        results = timed({"strata ops": strata, "plain PIL loop": plain_pil}, jpegs, args.batch, args.repeats)
    for name, (per_s, cpu, median) in results.items():
        print(f"{name:15s} {per_s:7.1f} images/s (wall)   {cpu * 1e3:6.2f} ms CPU/image "
              f"(median {median * 1e3:5.2f})   {1 / cpu:7.1f} images/s per core")
    if args.recipes:
        with threadpool_limits(1):
            recipe_cores(jpegs, args.batch, args.repeats)


if __name__ == "__main__":
    main()
