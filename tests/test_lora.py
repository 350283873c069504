"""LoRA (models/layers.py LoRADense, train/optimizers.py trainable_mask): off it is the plain
layer; a fresh adapter leaves the model unchanged; only the adapters train and only they
have optimizer state; the trainable count is the formula's; a run resumes exactly; export
merges the adapters so `transformers` computes what the unmerged Strata model computes."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

import errors
from models import build_model
from models.layers import LoRADense, merge_lora
from train import hf, init_from, loop
from train.optimizers import trainable_mask
from train.state import count_trainable

ALL = ("query", "key", "value", "out", "mlp_in", "mlp_out")
E, M, L, R = 16, 32, 2, 4  # width, MLP width, layers, rank of the tiny models below


def _flat(tree) -> dict[str, np.ndarray]:
    return traverse_util.flatten_dict(jax.device_get(nn.unbox(tree)), sep="/")


def _is_adapter(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(("lora_a", "lora_b"))


def _model(family: str, rank: int = 0, targets=("query", "value")):
    lora = dict(lora_rank=rank, lora_alpha=8.0, lora_targets=targets, lora_train=("head/.*",))
    if family == "gpt":
        return build_model(name="gpt", vocab_size=50, num_layers=L, num_heads=2, width=E, mlp_ratio=M // E,
                           max_len=8, **lora), (jnp.arange(16).reshape(2, 8) % 50,)
    if family == "vit":
        return build_model(name="vit", variant="Ti/2", width=E, depth=L, num_heads=2, mlp_dim=M,
                           num_classes=10, **lora), (jnp.linspace(-1, 1, 128).reshape(2, 8, 8, 1),)
    tokens = jnp.arange(1, 17).reshape(2, 8) % 40 + 1
    return build_model(name="transformer", vocab_size=41, num_layers=L, width=E, num_heads=2, mlp_dim=M,
                       dropout=0.0, max_len=8, **lora), (tokens, tokens[::-1])


def _init(model, inputs):
    return model.init(jax.random.PRNGKey(0), *inputs, train=False)["params"]


@pytest.mark.parametrize("features,axis", [(6, -1), ((2, 3), -1), (6, (-2, -1))])
def test_rank_zero_is_flax_dense_exactly(features, axis):
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 5))
    init = nn.initializers.normal(0.5)
    ref = (nn.Dense(features, kernel_init=init) if isinstance(features, int) and axis == -1
           else nn.DenseGeneral(features, axis=axis, kernel_init=init))
    ours = LoRADense(features, axis=axis, kernel_init=init, lora_rank=0)
    p_ref, p_ours = ref.init(jax.random.PRNGKey(0), x), ours.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(np.shape, p_ref) == jax.tree.map(np.shape, p_ours)
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_ours)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.apply(p_ref, x), ours.apply(p_ours, x))


@pytest.mark.parametrize("family", ["gpt", "vit", "transformer"])
def test_fresh_adapters_leave_the_model_unchanged(family):
    plain, inputs = _model(family)
    lora, _ = _model(family, rank=R, targets=ALL)
    p0, p = _init(plain, inputs), _init(lora, inputs)
    flat0, flat = _flat(p0), _flat(p)
    assert not any(_is_adapter(k) for k in flat0)           # rank 0: no adapter anywhere
    assert {k for k in flat if not _is_adapter(k)} == set(flat0)
    for k, v in flat0.items():                              # the same base weights
        np.testing.assert_array_equal(flat[k], v)
    assert all(not flat[k].any() for k in flat if "lora_b" in k)  # B = 0 ...
    assert all(flat[k].std() > 0 for k in flat if "lora_a" in k)  # ... A random
    np.testing.assert_array_equal(plain.apply({"params": nn.unbox(p0)}, *inputs, train=False),
                                  lora.apply({"params": nn.unbox(p)}, *inputs, train=False))


def _trainable_formula(family: str, targets) -> int:
    """Adapters per projection: r x (inputs + outputs); attention projections are E -> E,
    mlp_in E -> M, mlp_out M -> E. GPT and ViT: one attention + one MLP per layer, plus
    the head that model.lora_train names (GPT, untied: E x 50 vocab; ViT: E x 10 classes
    + 10 biases); the encoder-decoder Transformer (tied output, no head) has one attention
    per encoder layer, two (self, cross) per decoder layer, an MLP in each."""
    attention = sum(2 * E for t in ("query", "key", "value", "out") if t in targets)
    mlp = (E + M) * (("mlp_in" in targets) + ("mlp_out" in targets))
    if family == "transformer":
        return R * L * (3 * attention + 2 * mlp)
    head = E * 10 + 10 if family == "vit" else E * 50
    return R * L * (attention + mlp) + head


@pytest.mark.parametrize("targets", [("query", "value"), ALL, ("key", "mlp_out")])
@pytest.mark.parametrize("family", ["gpt", "vit", "transformer"])
def test_trainable_count_is_the_formula(family, targets):
    model, inputs = _model(family, rank=R, targets=targets)
    params = nn.unbox(jax.eval_shape(lambda: _init(model, inputs)))
    assert count_trainable(params, trainable_mask(("head/.*",))) == _trainable_formula(family, targets)


@pytest.mark.parametrize("family", ["gpt", "vit", "transformer"])
def test_merge_computes_what_the_adapters_compute(family):
    lora, inputs = _model(family, rank=R, targets=ALL)
    plain, _ = _model(family)
    params = jax.device_get(nn.unbox(_init(lora, inputs)))
    rng = np.random.RandomState(0)  # trained-looking adapters: B no longer zero
    params = traverse_util.unflatten_dict({k: (rng.normal(0, 0.05, v.shape).astype(np.float32)
                                               if "lora_b" in k or k.startswith("head/") else v)
                                           for k, v in _flat(params).items()}, sep="/")
    merged = merge_lora(params, 8.0)
    assert not any(_is_adapter(k) for k in _flat(merged))
    out = lora.apply({"params": params}, *inputs, train=False)
    assert float(jnp.abs(out - plain.apply({"params": _init(plain, inputs)}, *inputs, train=False)).max()) > 1e-3
    np.testing.assert_allclose(plain.apply({"params": merged}, *inputs, train=False), out, atol=1e-5, rtol=0)


def test_bad_settings_are_user_errors():
    with pytest.raises(errors.ConfigError, match="has no LoRA adapters.*gpt, transformer, vit"):
        build_model(name="resnet", depth=8, lora_rank=4)
    model, inputs = _model("gpt", rank=R, targets=("query", "qkv"))
    with pytest.raises(errors.UnknownNameError, match="unknown LoRA target 'qkv'"):
        _init(model, inputs)
    model, inputs = _model("gpt", rank=R)
    with pytest.raises(errors.ConfigError, match="does not work with model.scan_layers"):
        _init(model.clone(scan_layers=True), inputs)
    model, inputs = _model("vit", rank=R, targets=())
    with pytest.raises(errors.ConfigError, match="lora_targets is empty"):
        _init(model, inputs)
    with pytest.raises(errors.ConfigError, match="lora_train has a bad regular expression"):
        trainable_mask(("head/[",))
    assert build_model(name="resnet", depth=8, lora_rank=0).depth == 8  # off: any family


def _lora_gpt_run(mesh, grad_accum: int, steps: int = 3):
    """`steps` SGD steps of a LoRA GPT (all targets) on `mesh`: (losses, state, shardings)."""
    import ml_collections
    from train.optimizers import build_optimizer
    from train.sharding import DEFAULT_RULES, batch_sharding, to_global
    from train.state import create_train_state
    from train.step import jit_train_step
    from train.tasks import build_task
    model, _ = _model("gpt", rank=R, targets=ALL)
    task = build_task(name="language_model", vocab_size=50)
    trainable = trainable_mask(())
    tx = build_optimizer(ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.5, momentum=0.9, nesterov=False, schedule="constant", warmup_steps=0,
        weight_decay=1e-2, grad_clip=0.0)), steps, trainable)
    rng = np.random.default_rng(0)
    batches = [{"tokens": rng.integers(0, 50, (16, 9)).astype(np.int32)} for _ in range(steps)]
    state, shardings = create_train_state(model, task, tx, {"tokens": batches[0]["tokens"][:1]}, 0, False,
                                          mesh, DEFAULT_RULES)
    step = jit_train_step(model, task, tx, shardings, batch_sharding(mesh), grad_accum=grad_accum,
                          trainable=trainable)
    losses = []
    for b in batches:
        state, m = step(state, to_global(b, mesh))
        losses.append(float(m["loss"]))
    return np.array(losses), state, shardings


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_adapters_shard_by_the_kernels_axes_and_accumulate_exactly():
    from train.sharding import make_mesh
    losses, state, shardings = _lora_gpt_run(make_mesh(2, 4, 1), grad_accum=1)
    qkv = shardings.params["block_0"]["attn"]["qkv"]
    assert tuple(qkv["lora_a_0"].spec) == ("fsdp", None)   # kernel ("embed", None, "heads", "kv")
    assert tuple(qkv["lora_b_2"].spec)[0] is None          # the rank axis is replicated
    assert qkv["lora_a_0"].spec == shardings.opt_state.inner_states["train"].inner_state[1][0].trace[
        "block_0"]["attn"]["qkv"]["lora_a_0"].spec        # momentum placed like its parameter
    assert len(jax.tree.leaves(shardings.opt_state)) == len(jax.tree.leaves(state.opt_state))
    accumulated, state2, _ = _lora_gpt_run(make_mesh(2, 4, 1), grad_accum=2)
    np.testing.assert_allclose(accumulated, losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state2.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


# --- Training through the loop: a transformers GPT-2 imported and fine-tuned with LoRA ---

def _hf_gpt2(folder: str) -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=256, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # a -0.0 frozen weight: "bit-identical" must keep its sign bit
        model.transformer.h[0].ln_1.bias[0] = -0.0
    model.save_pretrained(folder)


def _config(folder: str, tfds_dir: str, steps: int):
    from configs.gpt2_finetune import get_config
    c = get_config(f"hf={folder},runlocal")
    c.model.lora_rank = R
    c.model.lora_targets = ("query", "value", "mlp_in")
    c.data.data_dir = tfds_dir
    c.optimizer.schedule = "constant"  # so that a 3-step run resumed to 6 equals a 6-step run
    c.optimizer.weight_decay = 0.1     # must not reach the frozen weights
    c.train.update(steps=steps, log_every=1, eval_every=0, checkpoint_every=3, progress=False)
    return c


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tfds_dir):
    root = tmp_path_factory.mktemp("lora")
    folder, workdir = str(root / "hf"), str(root / "run")
    _hf_gpt2(folder)
    c = _config(folder, tfds_dir, steps=6)
    loop.train(c, workdir)
    return folder, workdir, c


def _train_metrics(workdir: str) -> list[dict]:
    """The train/* lines of metrics.jsonl (a shorter run also evaluates at its end)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("eval/")} for line in f]


@pytest.mark.slow  # trains through the loop (make test-fast leaves it out)
def test_only_the_adapters_change_and_only_they_have_optimizer_state(lora_run):
    folder, workdir, c = lora_run
    loaded, trained = _flat(hf.load_params(folder)), _flat(init_from.load_params(workdir))
    adapters = {k: v for k, v in trained.items() if _is_adapter(k)}
    assert set(trained) - set(adapters) == set(loaded)
    assert np.signbit(loaded["block_0/ln_attn/bias"][0])
    for k, v in loaded.items():  # bit-identical after 6 AdamW steps with weight decay
        assert trained[k].tobytes() == v.tobytes(), k
    assert all(np.abs(v).max() > 0 for k, v in adapters.items() if "lora_b" in k)  # they trained

    exp = loop.Experiment(c, workdir, read_only=True)
    state, _ = exp.restore(6)
    exp.checkpointer.close()
    adapter_shapes = sorted(v.shape for v in adapters.values())
    arrays = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]
    # AdamW's two moments per adapter, and nothing else (scalar step counts aside)
    assert sorted(x.shape for x in arrays) == sorted(adapter_shapes * 2)
    assert sum(x.size for x in arrays) == 2 * count_trainable(state.params, exp.trainable)


@pytest.mark.slow  # trains through the loop (make test-fast leaves it out)
def test_resumed_lora_run_is_bit_identical(lora_run, tfds_dir, tmp_path):
    folder, reference, _ = lora_run
    loop.train(_config(folder, tfds_dir, steps=3), str(tmp_path))
    loop.train(_config(folder, tfds_dir, steps=6), str(tmp_path))
    assert _train_metrics(str(tmp_path)) == _train_metrics(reference)
    resumed = _flat(init_from.load_params(str(tmp_path)))
    for k, v in _flat(init_from.load_params(reference)).items():
        assert resumed[k].tobytes() == v.tobytes(), k


@pytest.mark.slow  # trains through the loop (make test-fast leaves it out)
def test_export_merges_adapters_into_a_plain_gpt2(lora_run, tmp_path):
    from commands.export import _export_hf
    _, workdir, c = lora_run
    _export_hf(workdir, str(tmp_path))
    exported = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    tokens = np.random.RandomState(0).randint(0, 256, (2, 32)).astype(np.int32)
    with torch.no_grad():
        theirs = exported(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    params = init_from.load_params(workdir)  # unmerged: base + adapters
    ours = np.asarray(build_model(**c.model).apply({"params": params}, jnp.asarray(tokens), train=False))
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
