"""pytorch-fid's FID InceptionV3 (models/inception.py) and its weights converter
(train/evaluators/inception_weights.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from errors import ConfigError
from models import build_model
from train.evaluators import fid, inception_weights as iw

# torchvision's inception_v3 has 27,161,264 parameters (its IMAGENET1K_V1 weights' "num_params",
# with the auxiliary classifier and 1000 classes). pytorch-fid's has no auxiliary classifier
# (768->128 1x1 conv + BN, 128->768 5x5 conv + BN, 768->1000 fc) and 1008 classes.
TORCHVISION = 27_161_264
AUX = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
FID_INCEPTION = TORCHVISION - AUX + 8 * (2048 + 1)


def test_architecture_shapes_and_parameter_count():
    variables = iw.abstract_variables()
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
    assert count == FID_INCEPTION == 23_850_960
    model = build_model("inception_v3")
    x = jnp.zeros((2, 299, 299, 3))
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 2048)
    logits = build_model("inception_v3", logits=True)
    assert jax.eval_shape(logits.apply, variables, x).shape == (2, 1008)
    mixed = variables["params"]["Mixed_7c"]
    assert mixed["branch3x3dbl_1"]["conv"]["kernel"].shape == (1, 1, 2048, 448)
    assert variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"].shape == (32,)


@pytest.mark.heavy  # compiles the full network (~60 s of CPU; 10 min of wall on the loaded 2-core machine)
def test_torch_state_round_trip_and_the_evaluator_reads_the_file(tmp_path):
    """Random Flax variables -> torch names and layouts -> Flax: identical; the written file
    is what the fid evaluator loads, and it computes the same features."""
    model = build_model("inception_v3")
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 75, 75, 3), minval=-1, maxval=1)  # 75: the smallest input
    variables = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), x))
    rng = np.random.default_rng(0)  # non-trivial statistics, so a swapped mean/var would show
    variables = jax.tree.map(lambda v: v + rng.normal(0, 0.1, v.shape).astype(np.float32) ** 2, variables)
    state = iw.to_torch_state(variables)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)            # (out, in, kh, kw)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert state["fc.weight"].shape == (1008, 2048)
    assert {"Mixed_5b.branch_pool.bn.running_mean", "Mixed_5b.branch_pool.bn.running_var"} <= set(state)
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)  # torch's counters are ignored
    back = iw.from_torch_state(state)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, variables))
    path = str(tmp_path / "inception.npz")
    fid.save_feature_network(path, iw.NETWORK, back)
    loaded_model, loaded = fid.load_feature_network(path)
    assert loaded_model == model
    apply = jax.jit(model.apply)  # one compile serves both
    np.testing.assert_array_equal(apply(loaded, x), apply(variables, x))
    del state["fc.bias"]
    with pytest.raises(ConfigError, match="missing \\['fc.bias'\\]"):
        iw.from_torch_state(state)


def test_missing_weights_file_is_one_line_naming_the_url(tmp_path, capsys):
    assert iw.main([str(tmp_path / "pt_inception.pth"), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and iw.URL in err and not (tmp_path / "out.npz").exists()
