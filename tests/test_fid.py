"""The `fid` evaluator: features of a user-supplied Linen network (model spec + params in
one .npz), the Frechet distance against a direct scipy computation, one-line errors, and
a diffusion run that reports eval/fid/fid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from errors import ConfigError
from models import build_model
from train.evaluators import fid

SPEC = {"name": "resnet", "depth": 8, "family": "cifar", "width": 4, "num_classes": 10}
LAYER = "BasicBlock_2"  # the last block: (B, H/4, W/4, 16) -> 16 features


def write_network(path, channels: int = 3, seed: int = 0) -> dict:
    model = build_model(**SPEC)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, channels)), train=False)
    fid.save_feature_network(str(path), SPEC, variables)
    return variables


def direct_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula: ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 sqrtm(Sa Sb))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_fid_of_a_random_network_matches_a_direct_computation(tmp_path):
    path = tmp_path / "net.npz"
    variables = write_network(path)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (96, 8, 8, 3)).astype(np.float32)
    fake = np.clip(rng.normal(0.3, 0.5, (80, 8, 8, 3)), -1, 1).astype(np.float32)

    model, loaded = fid.load_feature_network(str(path))
    import flax.linen as nn
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(nn.meta.unbox(variables)))
    features = fid.feature_fn(model, loaded, LAYER)
    fa, fb = fid.batched(features, real, 32), fid.batched(features, fake, 32)  # 80 = 2.5 batches
    assert fa.shape == (96, 16) and fb.shape == (80, 16)

    # The same features straight from the module, without the evaluator's code.
    def direct(x):
        _, state = build_model(**SPEC).apply(variables, jnp.asarray(x), train=False,
                                             capture_intermediates=True, mutable=["intermediates"])
        return np.asarray(state["intermediates"][LAYER]["__call__"][0]).mean(axis=(1, 2))
    np.testing.assert_allclose(fb, direct(fake), rtol=1e-5, atol=1e-6)
    want = direct_fd(direct(real).astype(np.float64), direct(fake).astype(np.float64))
    got = fid.fid_from_features(fa, fb)
    assert want > 0.01
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert abs(fid.fid_from_features(fa, fa)) < 1e-6
    # Resizing (e.g. to Inception's 299) goes before the network.
    assert fid.batched(fid.feature_fn(model, loaded, LAYER, image_size=16), fake[:4], 4).shape == (4, 16)


def test_missing_or_malformed_weights_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="weights file '.*nope.npz' not found.*pytorch-fid"):
        fid.load_feature_network(str(tmp_path / "nope.npz"))
    np.savez(tmp_path / "bare.npz", x=np.zeros(3))
    with pytest.raises(ConfigError, match="has no 'network' entry"):
        fid.load_feature_network(str(tmp_path / "bare.npz"))


@pytest.mark.heavy  # compiles the U-Net's train, eval and sampling steps: ~80 s on 2 busy cores
def test_fid_evaluator_in_a_diffusion_run(tmp_path):
    from configs.common import evaluator
    from configs.digits_ddpm import get_config
    from train import loop
    path = tmp_path / "net.npz"
    write_network(path, channels=1)
    c = get_config("runlocal")
    c.data.data_dir = str(tmp_path / "tfds")
    c.train.steps = 1
    c.train.progress = False
    c.evals.fid = evaluator("fid", weights=str(path), num_samples=32, batch_size=16,
                            feature_layer=LAYER, max_batches=2)
    last = loop.train(c, str(tmp_path / "run"))
    assert np.isfinite(last["eval/fid/fid"]) and last["eval/fid/fid"] > 0
    c.evals.fid.weights = str(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="fid evaluator: weights file"):
        loop.Experiment(c, str(tmp_path / "run2"))
