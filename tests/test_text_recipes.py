"""Parameter counts of the text recipes at their published sizes (jax.eval_shape: nothing
is allocated), against the published figures or the stated formula. Their :runlocal
variants train in tests/test_evaluators.py (every config, two steps and an eval)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import build_model


def count(name: str) -> int:
    c = importlib.import_module(f"configs.{name}").get_config()
    model = build_model(**c.model)
    x = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    args = (x, x) if c.model.name == "transformer" else (x,)
    shapes = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a, train=False), *args)["params"]
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))


def gpt(V, L, E, T, tied, biases=True):
    """GPT-2 layout: per layer 12E^2 weights + 13E biases/norms (qkv 3E, out E, MLP 4E + E,
    2 LayerNorms 4E), embeddings V*E (+ an untied head V*E), positions T*E, a final LN 2E."""
    layer = 12 * E * E + (13 * E if biases else 4 * E)
    return L * layer + V * E * (1 if tied else 2) + T * E + 2 * E


def transformer(V, L, E, F):
    """Vaswani base layout, shared tied embedding, no attention biases: encoder layer
    4E^2 + 2EF + F + E + 2 LNs (4E); decoder layer 8E^2 + 2EF + F + E + 3 LNs (6E)."""
    return V * E + L * (4 * E * E + 2 * E * F + F + E + 4 * E) + L * (8 * E * E + 2 * E * F + F + E + 6 * E)


@pytest.mark.parametrize("name, want, published", [
    ("openwebtext_gpt2_124m", gpt(50257, 12, 768, 1024, tied=True), 124_439_808),
    ("shakespeare_char", gpt(256, 6, 384, 256, tied=True), None),
    ("lm1b_gpt", gpt(30000, 6, 512, 128, tied=False), None),
    ("wmt14_transformer_base", transformer(32000, 6, 512, 2048), None),
])
def test_recipe_parameter_counts(name, want, published):
    assert count(name) == want
    if published:
        assert want == published  # GPT-2 small: 124.4M with tied embeddings


def test_baby_gpt_matches_nanogpt_without_biases_and_positions():
    # nanoGPT's 10.65M: no biases, 65 characters, position embeddings not counted.
    assert round(gpt(65, 6, 384, 0, tied=True, biases=False) / 1e6, 2) == 10.65
