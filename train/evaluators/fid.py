"""`fid`: the Frechet distance between a generator's samples and a real split in the
features of a fixed network the user supplies (Heusel et al. 2017; with InceptionV3's
2048 pool features this is FID).

The network is any Linen module in `models/` (found by name through MODELS) together with
its parameters, both in one .npz file (`weights`): the arrays under their flattened
parameter paths ("params/stem_conv/kernel", ...) and the key "network", a JSON object
`{"name": "resnet", "depth": 20, ...}` of the model's name and fields (what
`config.model` would hold); `save_feature_network` writes such a file. The features are
the network's output, or with `feature_layer` the output of that submodule (averaged
over the spatial axes when it is (B, H, W, C)).

For FID numbers comparable with published ones, use pytorch-fid's Inception
(models/inception.py, `inception_v3`) with its `pt_inception-2015-12-05` weights converted
by train/evaluators/inception_weights.py, and `image_size=299`. The statistics use gaussian_stats and
frechet_distance from sample_quality.py; like FID they are biased upwards for small
sample sets, so compare numbers at equal `num_samples`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from errors import ConfigError
from train.evaluators.base import EvalContext, Evaluator
from train.evaluators.sample_quality import frechet_distance, gaussian_stats

WHERE = ("an .npz with the network's parameters and a 'network' JSON entry (see "
         "train/evaluators/fid.py, save_feature_network); for FID proper, pytorch-fid's "
         "pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid releases) "
         "converted with `python -m train.evaluators.inception_weights IN.pth OUT.npz`")


def save_feature_network(path: str, network: dict, variables: dict) -> None:
    """Writes `variables` (e.g. {"params": ...}) and the model spec `network` (name +
    fields) as the .npz file the evaluator's `weights` field names."""
    from flax import linen as nn, traverse_util
    flat = {"/".join(k): np.asarray(v)
            for k, v in traverse_util.flatten_dict(nn.meta.unbox(variables)).items()}
    np.savez(path, network=np.array(json.dumps(network)), **flat)


def load_feature_network(path: str) -> tuple[Any, dict]:
    """(Linen module, variables) from an .npz written by `save_feature_network`."""
    from flax import traverse_util

    from models import build_model
    if not path or not os.path.isfile(path):
        raise ConfigError(f"fid evaluator: weights file {path!r} not found; set the evaluator's "
                          f"`weights` to {WHERE}.")
    with np.load(path) as data:
        if "network" not in data.files:
            raise ConfigError(f"fid evaluator: {path} has no 'network' entry naming the model; "
                              f"write it with train.evaluators.fid.save_feature_network.")
        spec = json.loads(str(data["network"]))
        flat = {tuple(k.split("/")): jnp.asarray(data[k]) for k in data.files if k != "network"}
    return build_model(**spec), traverse_util.unflatten_dict(flat)


def feature_fn(model: Any, variables: dict, feature_layer: str = "",
               image_size: int = 0) -> Callable[[jax.Array], jax.Array]:
    """A jitted (B, H, W, C) images -> (B, D) float32 features of `model` (eval mode)."""
    def features(images: jax.Array) -> jax.Array:
        if image_size:  # e.g. 299 for InceptionV3
            images = jax.image.resize(images, (images.shape[0], image_size, image_size,
                                               images.shape[-1]), "bilinear")
        if not feature_layer:
            out = model.apply(variables, images, train=False)
        else:
            _, state = model.apply(variables, images, train=False, mutable=["intermediates"],
                                   capture_intermediates=lambda m, _: m.name == feature_layer)
            found = jax.tree.leaves(state.get("intermediates", {}))
            if not found:
                raise ConfigError(f"fid evaluator: the network has no submodule named {feature_layer!r}.")
            out = found[0]
        out = out.astype(jnp.float32)
        return out.mean(axis=(1, 2)) if out.ndim == 4 else out.reshape(out.shape[0], -1)
    return jax.jit(features)


def batched(fn: Callable, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`fn` over `images` in batches (the last one padded, so one compiled shape)."""
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out.append(np.asarray(fn(jnp.asarray(chunk)))[:batch_size - pad])
    return np.concatenate(out)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def real_images(source: Sequence[dict], preprocess: str, input_key: str, batch_size: int,
                max_batches: int) -> np.ndarray:
    """(N, H, W, C) float32 images of `source` after `preprocess` (padding rows dropped)."""
    from data import pipeline
    out = [b[input_key][b["mask"] > 0] for b in pipeline.eval_batches(
        source, global_batch_size=batch_size, preprocess=preprocess, max_batches=max_batches or None)]
    return np.concatenate(out).astype(np.float32)


_REAL: dict[tuple, np.ndarray] = {}  # real-split features, once per process


@dataclasses.dataclass
class FID(Evaluator):
    """Draws `num_samples` images with `config.sample`'s sampler and reports `fid`, their
    Frechet distance to the evaluator's split (its first `max_batches` batches, else all)
    in the features of the network in `weights`."""
    weights: str = ""
    num_samples: int = 10_000
    feature_layer: str = ""
    image_size: int = 0

    def check(self, task, source) -> None:
        if not hasattr(task, "generate"):
            raise ConfigError(f"evaluator {self.name!r} (fid) needs a generative task (e.g. diffusion).")
        if self.num_samples < 2:
            raise ConfigError(f"config.evals.{self.name}.num_samples must be >= 2, got {self.num_samples}.")
        load_feature_network(self.weights)  # a missing or malformed file: one line, now

    def run(self, ctx: EvalContext) -> dict[str, float]:
        model, variables = load_feature_network(self.weights)
        features = partial(batched, feature_fn(model, variables, self.feature_layer, self.image_size),
                           batch_size=self.batch_size)
        key = (self.weights, self.feature_layer, self.image_size, self.split, self.preprocess,
               self.max_batches)
        if key not in _REAL:
            _REAL[key] = features(real_images(ctx.source(self.split, self.preprocess), self.preprocess,
                                              ctx.task.input_key, self.batch_size, self.max_batches))
        classes = max(getattr(ctx.task, "num_classes", 0), 1)
        samples = []
        for i, start in enumerate(range(0, self.num_samples, self.batch_size)):
            n = min(self.batch_size, self.num_samples - start)
            labels = (np.arange(start, start + n) % classes).astype(np.int32)
            rng = jax.random.fold_in(ctx.task_context.rng, i)
            samples.append(features(ctx.task.generate(ctx.task_context, labels, ctx.sample, rng=rng)))
        return {"fid": fid_from_features(_REAL[key], np.concatenate(samples))}
