"""benchmarks/mfu.py: the FLOP count it divides by and the peak it looks up."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from benchmarks.mfu import gpt_flops_per_token, peak_flops
from configs import openwebtext_gpt2_124m
from models import build_model


def test_gpt_flops_count_the_model_without_its_position_table():
    c = openwebtext_gpt2_124m.get_config()
    c.model.dtype = "float32"
    model = build_model(**c.model.to_dict())
    params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                                        train=False))["params"])
    n = sum(x.size for x in jax.tree.leaves(params)) - params["pos_embed"].size
    assert n == 123_653_376  # nanoGPT's "number of parameters: 123.65M" for GPT-2 small
    m = c.model
    assert gpt_flops_per_token(c) == 6 * n + 12 * m.num_layers * m.width * m.max_len


def test_peak_from_the_device_kind_or_the_flag():
    assert peak_flops("NVIDIA A100-SXM4-80GB", 0) == pytest.approx(312e12)
    assert peak_flops("TPU v4", 0) == pytest.approx(275e12)
    assert peak_flops("TPU v4", 100) == pytest.approx(100e12)  # the flag wins
    assert peak_flops("Some new chip", 0) is None
