"""Hugging Face checkpoints in and out (train/hf/), against `transformers` itself: a random
GPT-2 and ViT saved with save_pretrained give the same logits in Strata, and Strata's
export loads back with from_pretrained to the same logits."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from errors import CheckpointError
from models import build_model
from train import hf, init_from

TOL = 1e-4  # float32 on both sides


def _gpt2(folder: str, tie: bool = True, **sizes) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=24,
                                     tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0, **sizes)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a swapped one shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def _vit(folder: str) -> transformers.ViTForImageClassification:
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, image_size=8, patch_size=2, num_channels=1,
                                    num_labels=10)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))  # the classifier and cls token start at zero
    model.save_pretrained(folder)
    return model


def _strata_gpt(folder: str):
    from configs.gpt2_finetune import get_config
    return build_model(**get_config(f"hf={folder}").model.to_dict())


def _strata_vit(folder: str):
    from configs.vit_finetune import get_config
    return build_model(**get_config(f"hf={folder}").model.to_dict())


def _tokens() -> np.ndarray:
    return np.random.RandomState(0).randint(0, 97, (2, 24)).astype(np.int32)


def _images() -> np.ndarray:
    return np.random.RandomState(0).uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)  # NHWC


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        if isinstance(model, transformers.ViTForImageClassification):
            return model(pixel_values=torch.tensor(x.transpose(0, 3, 1, 2))).logits.numpy()
        return model(torch.tensor(x, dtype=torch.long)).logits.numpy()


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_import_matches_transformers_logits(tmp_path, tie):
    reference = _gpt2(str(tmp_path), tie=tie)
    model = _strata_gpt(str(tmp_path))
    assert model.tie_embeddings == tie and model.max_len == 24 and model.vocab_size == 97
    params = hf.load_params(str(tmp_path))
    ours = np.asarray(model.apply({"params": dict(params)}, jnp.asarray(_tokens()), train=False))
    np.testing.assert_allclose(ours, _torch_logits(reference, _tokens()), atol=TOL, rtol=0)


def test_vit_import_matches_transformers_logits(tmp_path):
    reference = _vit(str(tmp_path))
    model = _strata_vit(str(tmp_path))
    assert model.layer_norm_epsilon == 1e-12 and model.gelu_approximate is False
    params = hf.load_params(str(tmp_path))
    ours = np.asarray(model.apply({"params": dict(params)}, jnp.asarray(_images()), train=False))
    np.testing.assert_allclose(ours, _torch_logits(reference, _images()), atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["gpt", "gpt_untied", "vit"])
def test_export_round_trips_through_from_pretrained(tmp_path, family):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    if family.startswith("gpt"):
        _gpt2(src, tie=family == "gpt")
        model, x, cls = _strata_gpt(src), _tokens(), transformers.GPT2LMHeadModel
    else:
        _vit(src)
        model, x, cls = _strata_vit(src), _images(), transformers.ViTForImageClassification
    params = hf.load_params(src)
    fields = {k: v for k, v in model.__dict__.items() if k in type(model).__dataclass_fields__
              and k not in ("parent", "name")}
    written = hf.write_folder(out, dict(params), family.split("_")[0], fields)
    assert sorted(os.path.basename(p) for p in written) == ["config.json", "model.safetensors"]
    loaded = cls.from_pretrained(out).eval()
    ours = np.asarray(model.apply({"params": dict(params)}, jnp.asarray(x), train=False))
    np.testing.assert_allclose(_torch_logits(loaded, x), ours, atol=TOL, rtol=0)
    again = hf.load_params(out)  # and back into Strata: the very same arrays
    for a, b in zip(jax_leaves(again), jax_leaves(params)):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree) -> list[np.ndarray]:
    import jax
    return jax.tree.leaves(dict(tree))


def test_size_mismatch_names_first_tensor_and_both_shapes(tmp_path):
    _gpt2(str(tmp_path / "wide"), tie=True, n_inner=None)
    import jax
    narrow = build_model(name="gpt", vocab_size=97, num_layers=2, num_heads=2, width=16, max_len=24,
                         positions="learned", tie_embeddings=True)
    import flax.linen as nn
    target = nn.unbox(jax.eval_shape(lambda: narrow.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32), train=False))["params"])
    loaded = init_from.load_params("hf:" + str(tmp_path / "wide"))
    report = init_from.match_report(target, loaded)
    with pytest.raises(CheckpointError) as e:
        init_from.check_match(report, strict=True)
    line = str(e.value)
    assert "\n" not in line
    first = report["shape_mismatch"][0]
    assert first.startswith("wte.weight (97, 32) (as token_embed/embedding (97, 32)) -> the model's (97, 16)")
    assert first in line


def test_missing_tensor_and_unknown_architecture_are_one_line(tmp_path):
    _gpt2(str(tmp_path), tie=True)
    from safetensors.numpy import load_file, save_file
    path = os.path.join(str(tmp_path), "model.safetensors")
    tensors = load_file(path)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"no tensor 'h.1.mlp.c_fc.bias'"):
        hf.load_params(str(tmp_path))
    with pytest.raises(CheckpointError, match="no config.json"):
        hf.load_params(str(tmp_path / "nowhere"))
