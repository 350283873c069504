"""pytorch-fid's Inception weights -> the `fid` evaluator's weights file.

    python -m train.evaluators.inception_weights pt_inception-2015-12-05-6726825d.pth inception.npz

The weights are pytorch-fid's port of the TensorFlow FID graph (a torch state dict; the
file cannot be downloaded here, get it from URL). Each torch name maps onto the parameter
of the same path in models/inception.py: conv `weight` (out, in, kh, kw) -> `kernel`
(kh, kw, in, out); BatchNorm `weight`/`bias` -> `scale`/`bias` and `running_mean`/
`running_var` -> batch_stats `mean`/`var`; `fc.weight` (out, in) -> `kernel` (in, out).
`num_batches_tracked` counters are dropped. The result is written with
`save_feature_network`, so `evaluator("fid", weights="inception.npz", image_size=299)` uses
it as is.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from errors import EXIT_USER, ConfigError, StrataError

URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
       "pt_inception-2015-12-05-6726825d.pth")
NETWORK = {"name": "inception_v3"}  # the model entry of the weights file (models.MODELS)
_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_FLAX_LEAF = {v: k for k, v in _TORCH_LEAF.items() if k != ("params", "scale")}


def _to_torch_layout(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        return x.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    return x.T if x.ndim == 2 else x


def _to_flax_layout(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        return x.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    return x.T if x.ndim == 2 else x


def to_torch_state(variables: dict) -> dict[str, np.ndarray]:
    """Flax {"params", "batch_stats"} of InceptionV3 -> pytorch-fid state-dict names and layouts."""
    from flax import linen as nn, traverse_util
    out = {}
    for path, value in traverse_util.flatten_dict(nn.meta.unbox(variables)).items():
        collection, *modules, leaf = path
        out[".".join([*modules, _TORCH_LEAF[(collection, leaf)]])] = _to_torch_layout(np.asarray(value))
    return out


def abstract_variables() -> dict:
    """Shapes of InceptionV3's variables (nothing allocated)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from models import build_model
    model = build_model(**NETWORK)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 299, 299, 3))))
    return nn.meta.unbox(shapes)


def from_torch_state(state: dict[str, np.ndarray]) -> dict:
    """pytorch-fid's state dict (numpy arrays) -> Flax {"params", "batch_stats"}; every
    variable of models/inception.py must be present with its shape, and nothing else."""
    from flax import traverse_util
    expected = traverse_util.flatten_dict(abstract_variables())
    by_torch = {}
    for path in expected:
        collection, *modules, leaf = path
        by_torch[".".join([*modules, _TORCH_LEAF[(collection, leaf)]])] = path
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(by_torch) - set(given)), sorted(set(given) - set(by_torch))
    if missing or extra:
        raise ConfigError(f"not pytorch-fid's FID Inception state dict: missing {missing[:3]} "
                          f"({len(missing)}), unexpected {extra[:3]} ({len(extra)}); get {URL}")
    flat = {}
    for name, path in by_torch.items():
        value = _to_flax_layout(np.asarray(given[name], np.float32))
        if value.shape != expected[path].shape:
            raise ConfigError(f"{name} has shape {value.shape} after conversion, InceptionV3 needs "
                              f"{expected[path].shape}; get {URL}")
        flat[path] = value
    return traverse_util.unflatten_dict(flat)


def read_torch_file(path: str) -> dict[str, np.ndarray]:
    """The state dict in a torch .pth file, as numpy arrays."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path} not found: download pytorch-fid's Inception weights from {URL}")
    try:
        import torch
    except ImportError:
        raise ConfigError("reading a .pth file needs PyTorch (pip install torch, CPU is enough).") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


def convert(torch_path: str, out_path: str) -> None:
    """Writes the `fid` evaluator's weights file for pytorch-fid's Inception at `torch_path`."""
    from train.evaluators.fid import save_feature_network
    save_feature_network(out_path, NETWORK, from_torch_state(read_torch_file(torch_path)))


def main(argv: list[str]) -> int:
    """`python -m train.evaluators.inception_weights IN.pth OUT.npz`; mistakes are one line, exit 2."""
    if len(argv) != 2:
        print(f"usage: python -m train.evaluators.inception_weights IN.pth OUT.npz  (IN: {URL})",
              file=sys.stderr)
        return EXIT_USER
    try:
        convert(*argv)
    except StrataError as e:
        print(f"strata: {e}", file=sys.stderr)
        return EXIT_USER
    print(f"strata: wrote {argv[1]}; use it with evaluator('fid', weights={argv[1]!r}, image_size=299)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
