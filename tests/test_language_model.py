"""The language-model task: loss and metrics, cached sampling, `run.py train` + `sample`."""
import json
import math
import os
import sysconfig

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.common import base_config
from helpers import run_cli
from models import build_model
from train.tasks import TaskContext, build_task
from train.tasks.lm_generate import _window, generate, next_token

TINY = {
    "gpt": dict(vocab_size=256, num_layers=2, num_heads=2, width=32, max_len=16),
    "rnn": dict(cell="lstm", num_layers=2, hidden=32, vocab_size=256),
}
OS_PY = os.path.join(sysconfig.get_paths()["stdlib"], "os.py")


def text_batch(rows: int = 8, length: int = 16) -> dict:
    data = np.frombuffer(open(OS_PY, "rb").read(), np.uint8)[:rows * length + 1].astype(np.int32)
    windows = np.stack([data[i * length:i * length + length + 1] for i in range(rows)])
    return {"tokens": jnp.asarray(windows)}  # (rows, length + 1)


def init_params(name: str, scale: float = 1.0):
    """Unboxed parameters, scaled up so that argmaxes are decisive (no near-ties)."""
    model = build_model(name, **TINY[name])
    params = jax.jit(lambda: model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32), train=False))()
    return model, jax.tree.map(lambda x: x * scale, nn.unbox(params["params"]))


def test_loss_decreases_on_one_batch():
    model, params = init_params("gpt")
    task = build_task("language_model")
    batch = text_batch()
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            apply = lambda x: (model.apply({"params": p}, x, train=True), {})  # noqa: E731
            return task.loss(apply, batch, jax.random.key(0))[:2]
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state = tx.init(params)
    losses = []
    for _ in range(40):
        params, opt_state, metrics = step(params, opt_state)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 4.5 and losses[-1] < 0.3 * losses[0], losses
    assert float(metrics["accuracy"]) > 0.7


def test_uniform_logits_cost_eight_bits_per_byte_and_mask_drops_rows():
    task = build_task("language_model")
    tokens = text_batch(rows=4)["tokens"]

    def apply(x):  # uniform over 256 bytes, except row 3 is sure of the wrong byte
        logits = jnp.zeros(x.shape + (256,))
        return logits.at[3, :, 0].set(100.0), {}
    sums = task.eval_sums(apply, {"tokens": tokens, "mask": jnp.array([1.0, 1.0, 1.0, 0.0])},
                          jax.random.key(0))
    means = {k: float(s) / float(w) for k, (s, w) in sums.items()}
    means = task.finalize_eval(means)
    assert means["loss"] == pytest.approx(math.log(256), rel=1e-5)
    assert means["bits_per_byte"] == pytest.approx(8.0, rel=1e-5)


def greedy_by_recomputation(model, params, ids: list[int], n: int) -> list[int]:
    """Greedy decoding that reruns the model on the whole context for every token,
    sliding the way `generate` documents once a GPT's max_len would be exceeded. The
    context is right-padded to one length (the models are causal), so this compiles once."""
    limit = getattr(model, "max_len", None)
    keep = limit // 2 if limit else None
    width = limit or len(ids) + n
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    history, start = list(ids), 0
    if limit and len(ids) >= limit:
        start = len(ids) - keep
    for _ in range(n):
        if limit and len(history) - start > limit:
            start = len(history) - keep
        context = history[start:]
        padded = jnp.asarray([context + [0] * (width - len(context))], jnp.int32)  # (1, width)
        logits = forward(params, padded)
        history.append(int(jnp.argmax(logits[0, len(context) - 1])))
    return history[len(ids):]


@pytest.mark.parametrize("name", ["gpt", "rnn"])
def test_cached_greedy_equals_recomputation_and_compiles_once_per_shape(name):
    model, params = init_params(name, scale=3.0)
    prompt = list(b"def ")
    n = 30 if name == "gpt" else 12  # a GPT with max_len 16 slides twice
    before = _window._cache_size()
    out = generate(model, {"params": params}, prompt, n, temperature=0.0, top_k=0,
                   rng=jax.random.key(0))
    assert _window._cache_size() - before <= 2  # the prompt's window, the slide's
    assert out == greedy_by_recomputation(model, params, prompt, n)


def sample_token_by_token(model, params, ids: list[int], n: int, *, temperature: float,
                          top_k: int, rng) -> list[int]:
    """The reference: one jitted model call and host round trip per token, token i drawn
    with fold_in(rng, i), the window sliding to max_len // 2 tokens when the cache is full."""
    from models.decoding import init_cache

    @jax.jit
    def advance(cache, tokens, i):
        logits, upd = model.apply({"params": params, "cache": cache}, tokens, train=False,
                                  decode=True, mutable=["cache"])
        return upd["cache"], next_token(logits[:, -1], jax.random.fold_in(rng, i),
                                        jnp.float32(temperature), top_k)

    limit = getattr(model, "max_len", None)
    keep = limit // 2 if limit else None
    history = list(ids)
    fed = history if not limit or len(history) < limit else history[-keep:]
    cache, token = advance(init_cache(model), jnp.asarray([fed], jnp.int32), 0)
    used, out = len(fed), []
    for i in range(1, n + 1):
        out.append(int(token[0]))
        history.append(out[-1])
        if i == n:
            break
        if limit and used >= limit:
            cache, token = advance(init_cache(model), jnp.asarray([history[-keep:]], jnp.int32), i)
            used = keep
        else:
            cache, token = advance(cache, jnp.asarray([[out[-1]]], jnp.int32), i)
            used += 1
    return out


@pytest.mark.parametrize("name", ["gpt", "rnn"])
def test_device_loop_draws_the_same_tokens_as_the_per_token_loop(name):
    model, params = init_params(name, scale=3.0)
    for temperature, top_k in ((0.8, 0), (1.0, 5)):
        kwargs = dict(temperature=temperature, top_k=top_k, rng=jax.random.key(7))
        out = generate(model, {"params": params}, list(b"import "), 40, **kwargs)  # GPT: slides 3 times
        assert out == sample_token_by_token(model, params, list(b"import "), 40, **kwargs)


def test_end_token_stops_generation_after_it():
    model, params = init_params("gpt", scale=3.0)
    kwargs = dict(temperature=1.0, top_k=0, rng=jax.random.key(3))
    free = generate(model, {"params": params}, list(b"x = "), 40, **kwargs)
    end = free[5]  # a token the free run draws; the stopped run must end at its first draw
    stopped = generate(model, {"params": params}, list(b"x = "), 40, end_id=end, **kwargs)
    assert stopped == free[:free.index(end) + 1]


def test_sample_returns_prompt_and_continuation_top1_is_greedy():
    model, params = init_params("gpt", scale=3.0)
    task = build_task("language_model")
    ctx = TaskContext(model, {"params": params}, None, None, jax.random.key(0))

    def sample(**settings):
        sample_config = base_config().sample
        sample_config.update(settings)
        return task.sample(ctx, sample_config).text

    greedy = sample(prompt="def ", num_tokens=20, temperature=0.0)
    top1 = sample(prompt="def ", num_tokens=20, temperature=1.5, top_k=1)
    sampled = sample(prompt="def ", num_tokens=20, temperature=1.0)
    assert greedy.startswith("def ") and top1 == greedy
    assert sampled.startswith("def ") and sampled == sample(prompt="def ", num_tokens=20, temperature=1.0)
    assert sample(prompt="", num_tokens=5, temperature=0.0)  # empty prompt works


def test_train_then_sample_end_to_end(tmp_path):
    text = tmp_path / "code.py"
    text.write_bytes(open(OS_PY, "rb").read())
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    result = run_cli("train", "--config", "configs/text_gpt.py:runlocal=1", "--workdir", workdir,
                     "--config.data.name=text_files", f"--config.data.files={text}",
                     f"--config.data.data_dir={data_dir}", "--config.train.steps=4",
                     "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
                     "--config.train.progress=False")
    assert result.returncode == 0, result.stderr[-3000:]
    last = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-1]
    assert last["eval/bits_per_byte"] == pytest.approx(last["eval/loss"] / math.log(2))

    # The unigram baseline, by hand: the entropy of the targets of the scored windows.
    data = text.read_bytes()
    val = np.frombuffer(data[len(data) - len(data) // 10:], np.uint8)
    seq_len, scored = 128, 2 * 16  # runlocal: eval_max_batches=2, eval_batch_size=16
    n = min((len(val) - 1) // seq_len, scored)
    p = np.bincount(val[1:n * seq_len + 1], minlength=256) / (n * seq_len)
    p = p[p > 0]
    assert last["eval/unigram_bits_per_byte"] == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-6)

    sample = ("sample", "--workdir", workdir, "--config.sample.prompt=def ",
              "--config.sample.num_tokens=40", "--config.sample.temperature=1.0")
    result = run_cli(*sample)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("def ") and len(result.stdout) > len("def ")
    assert run_cli(*sample).stdout == result.stdout  # config.sample.seed: reproducible
    other = run_cli(*sample, "--config.sample.seed=3")
    assert other.returncode == 0 and other.stdout != result.stdout
