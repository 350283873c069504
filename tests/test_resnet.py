"""ResNet shapes and parameter counts against the published figures."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from models import build_model


def count_params(model, shape):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return sum(x.size for x in jax.tree.leaves(nn.unbox(variables)["params"]))


@pytest.mark.parametrize("depth,family,shape,classes,published", [
    (20, "cifar", (1, 32, 32, 3), 10, 0.27e6),
    (56, "cifar", (1, 32, 32, 3), 10, 0.85e6),
    (50, "imagenet", (1, 224, 224, 3), 1000, 25.6e6),
])
def test_parameter_counts_match_published(depth, family, shape, classes, published):
    model = build_model("resnet", depth=depth, family=family, num_classes=classes)
    # The papers round to two or three significant figures.
    assert abs(count_params(model, shape) - published) / published < 0.01


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_output_shape_and_batch_stats():
    model = build_model("resnet", depth=8, num_classes=7)
    x = jnp.ones((4, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 7)
    assert "batch_stats" in updates


def test_bad_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet", depth=21).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), train=False)
