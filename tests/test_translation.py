"""The translation task and its decoding: packing equivalence, label-smoothed loss,
greedy == beam 1, and beam search == exhaustive search on a tiny model."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.transformer import Transformer
from train.tasks import beam_search as bs
from train.tasks.translation import Translation

V, EOS = 6, 1


def tiny(max_len: int = 16) -> Transformer:
    return Transformer(vocab_size=V, num_layers=1, width=16, num_heads=2, mlp_dim=32,
                       dropout=0.0, max_len=max_len)


def params_of(model, seed=0):
    x = jnp.ones((1, 4), jnp.int32)
    return model.init(jax.random.key(seed), x, x, train=False)["params"]


def test_a_packed_row_gives_the_logits_of_its_sequences_run_alone():
    model = tiny()
    params = params_of(model)
    a_in, a_out = [2, 3, 4, 1], [5, 2, 1]
    b_in, b_out = [4, 4, 1], [3, 5, 2, 1]
    L = 10
    pad = lambda xs: jnp.asarray([xs + [0] * (L - len(xs))], jnp.int32)  # (1, L)
    seg = lambda n, m: pad([1] * n + [2] * m)
    pos = lambda n, m: pad(list(range(n)) + list(range(m)))
    packed = model.apply({"params": params}, pad(a_in + b_in), pad(a_out + b_out), train=False,
                         inputs_segmentation=seg(4, 3), targets_segmentation=seg(3, 4),
                         inputs_positions=pos(4, 3), targets_positions=pos(3, 4))  # (1, L, V)
    alone_a = model.apply({"params": params}, pad(a_in), pad(a_out), train=False)
    alone_b = model.apply({"params": params}, pad(b_in), pad(b_out), train=False)
    np.testing.assert_allclose(packed[0, :3], alone_a[0, :3], atol=1e-5)
    np.testing.assert_allclose(packed[0, 3:7], alone_b[0, :4], atol=1e-5)


def test_loss_ignores_padding_and_smoothing_zero_is_the_nll():
    model = tiny()
    params = params_of(model)
    apply = lambda *a, **k: (model.apply({"params": params}, *a, train=False, **k), {})
    batch = {"inputs": jnp.asarray([[2, 3, 1, 0]]), "targets": jnp.asarray([[4, 1, 0, 0]])}
    longer = {"inputs": batch["inputs"], "targets": jnp.asarray([[4, 1, 0, 0, 0, 0]])}
    plain = Translation(vocab_size=V, label_smoothing=0.0)
    loss, metrics, _ = plain.loss(apply, batch, jax.random.key(0))
    np.testing.assert_allclose(loss, metrics["nll"], rtol=1e-6)
    np.testing.assert_allclose(plain.loss(apply, longer, jax.random.key(0))[0], loss, rtol=1e-5)
    logits = model.apply({"params": params}, batch["inputs"], batch["targets"], train=False)
    logp = jax.nn.log_softmax(logits[0, :2])
    np.testing.assert_allclose(loss, -(logp[0, 4] + logp[1, 1]) / 2, rtol=1e-5)
    smoothed = Translation(vocab_size=V, label_smoothing=0.1).loss(apply, batch, jax.random.key(0))[0]
    assert smoothed < loss  # the smoothed loss subtracts the target distribution's entropy


def _steps(model, params, inputs):
    """A decode_step with its cache for `inputs` (N, S), as `translate` builds it."""
    encoded = model.apply({"params": params}, inputs, train=False, method="encode")
    cache = bs._decoder_cache(model, encoded, inputs, 4)

    def step(tokens, cache):
        logits, upd = model.apply({"params": params, "cache": cache}, encoded, inputs, tokens,
                                  train=False, decode=True, method="decode", mutable=["cache"])
        return jax.nn.log_softmax(logits[:, -1]), upd["cache"]
    return step, cache


def test_beam_one_is_greedy():
    model = tiny()
    params = params_of(model, seed=3)
    inputs = jnp.asarray([[2, 3, 4, 1], [5, 5, 1, 0], [3, 1, 0, 0]], jnp.int32)
    greedy, _ = bs.translate(model, params, inputs, jnp.float32(0.0), beam_size=1, max_len=6, eos_id=EOS)
    step, cache = _steps(model, params, inputs)
    seqs, _ = bs.beam_search(step, cache, 3, 1, 4, EOS, 0.0)
    np.testing.assert_array_equal(seqs[:, 0], greedy[:, :4])


def _exhaustive(model, params, inputs, max_len, alpha):
    """Best eos-terminated sequence of at most max_len tokens by scoring every one of them
    with the same cached decoder calls the searches make."""
    best, best_score = None, -np.inf
    body_tokens = [t for t in range(V) if t != EOS]
    for n in range(1, max_len + 1):
        seqs = np.asarray([list(b) + [EOS] for b in itertools.product(body_tokens, repeat=n - 1)])
        step, cache = _steps(model, params, jnp.repeat(inputs, len(seqs), axis=0))
        fed = np.concatenate([np.zeros((len(seqs), 1), np.int32), seqs[:, :-1]], axis=1)
        logp = np.zeros(len(seqs))
        for t in range(n):
            log_probs, cache = step(jnp.asarray(fed[:, t:t + 1]), cache)
            logp += np.asarray(log_probs)[np.arange(len(seqs)), seqs[:, t]]
        scores = logp / ((5 + n) / 6) ** alpha
        i = int(np.argmax(scores))
        if scores[i] > best_score:
            best, best_score = list(seqs[i]), float(scores[i])
    return best, best_score


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_a_wide_beam_finds_the_exhaustive_best(alpha):
    model = tiny()
    params = params_of(model, seed=1)
    inputs = jnp.asarray([[2, 3, 4, 1]], jnp.int32)
    K = 1024  # >= every extension at every step (5^3 * 6): the beam keeps all hypotheses
    step, cache = _steps(model, params, jnp.repeat(inputs, K, axis=0))
    seqs, scores = bs.beam_search(step, cache, 1, K, 4, EOS, alpha)
    want, want_score = _exhaustive(model, params, inputs, 4, alpha)
    got = [int(t) for t in seqs[0, 0]]
    assert got[:len(want)] == want and all(t == 0 for t in got[len(want):])
    np.testing.assert_allclose(scores[0, 0], want_score, rtol=1e-4)
