"""Packed documents for the decoder-only GPT: a packed row gives each document the logits it
gets alone (both position schemes), the language-model loss over packed rows is the loss of
the documents run one by one, the packer keeps every token once, and the tokenised split and
its packing index are read back from disk on a second open."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import packing, token_cache, tokenizer
from errors import ConfigError
from models import build_model
from train.tasks.language_model import LanguageModel

TINY = dict(vocab_size=16, num_layers=2, num_heads=2, width=16, max_len=12)
DOC_A, DOC_B = [3, 7, 2, 9, 1], [5, 4, 8, 1]  # token ids, each document ending with eos = 1


def packed_row(docs: list[list[int]], length: int) -> dict[str, np.ndarray]:
    """One row of `length` tokens: the documents one after another, then padding."""
    ids, seg, pos = [], [], []
    for s, doc in enumerate(docs):
        ids += doc
        seg += [s + 1] * len(doc)
        pos += list(range(len(doc)))
    pad = [0] * (length - len(ids))
    return {k: np.asarray([v + pad], np.int32) for k, v in
            (("tokens", ids), ("tokens_segmentation", seg), ("tokens_positions", pos))}


@pytest.fixture(scope="module", params=["learned", "rotary"])
def gpt(request):
    model = build_model("gpt", **TINY, positions=request.param)
    x = jnp.zeros((1, 8), jnp.int32)
    params = nn.unbox(jax.jit(lambda: model.init(jax.random.key(1), x, train=False))()["params"])
    return model, params


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_a_packed_row_gives_the_logits_of_its_documents_run_alone(gpt):
    model, params = gpt
    row = packed_row([DOC_A, DOC_B], 11)
    packed = model.apply({"params": params}, jnp.asarray(row["tokens"]), train=False,
                         segmentation=jnp.asarray(row["tokens_segmentation"]),
                         segment_positions=jnp.asarray(row["tokens_positions"]))   # (1, 11, V)
    alone_a = model.apply({"params": params}, jnp.asarray([DOC_A]), train=False)
    alone_b = model.apply({"params": params}, jnp.asarray([DOC_B]), train=False)
    np.testing.assert_allclose(packed[0, :5], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 5:9], alone_b[0], atol=1e-5)
    # Without the segments document B would see A: its logits differ.
    joined = model.apply({"params": params}, jnp.asarray(row["tokens"]), train=False)
    assert not np.allclose(joined[0, 5:9], alone_b[0], atol=1e-3)


def test_packed_loss_is_the_mean_over_the_documents_real_targets(gpt):
    model, params = gpt
    apply = lambda tokens, **k: (model.apply({"params": params}, tokens, train=False, **k), {})
    task = LanguageModel(vocab_size=TINY["vocab_size"])
    row = packed_row([DOC_A, DOC_B], 12)                    # 9 tokens + 3 padding = T + 1
    loss, metrics, _ = task.loss(apply, {k: jnp.asarray(v) for k, v in row.items()}, jax.random.key(0))
    nll = []
    for doc in (DOC_A, DOC_B):                              # each alone, as a window
        logits = model.apply({"params": params}, jnp.asarray([doc[:-1]]), train=False)[0]
        logp = jax.nn.log_softmax(logits)
        nll += [-logp[t, doc[t + 1]] for t in range(len(doc) - 1)]
    assert len(nll) == 7                                    # 4 + 3 targets; none across A|B
    np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-5)
    sums = task.eval_sums(apply, {**{k: jnp.asarray(v) for k, v in row.items()},
                                  "mask": jnp.ones((1,))}, jax.random.key(0))
    np.testing.assert_allclose(sums["loss"][0] / sums["loss"][1], np.mean(nll), rtol=1e-5)
    assert float(sums["loss"][1]) == 7.0


def test_windows_path_is_unchanged_by_the_segment_code(gpt):
    """No segment features: the loss is the plain mean over every window target."""
    model, params = gpt
    apply = lambda tokens, **k: (model.apply({"params": params}, tokens, train=False, **k), {})
    tokens = jnp.asarray([DOC_A + DOC_B[:3]])               # (1, 8)
    loss = LanguageModel(vocab_size=16).loss(apply, {"tokens": tokens}, jax.random.key(0))[0]
    logp = jax.nn.log_softmax(model.apply({"params": params}, tokens[:, :-1], train=False)[0])
    want = -np.mean([logp[t, int(tokens[0, t + 1])] for t in range(7)])
    np.testing.assert_allclose(loss, want, rtol=1e-5)


DOCS = [{"text": ("word " * (i % 7) + f"doc{i}").encode()} for i in range(30)]


def test_packed_documents_keep_every_target_once_with_restarting_positions():
    tok = tokenizer.Bytes()
    seq_len = 16
    rows = packing.PackedDocuments(DOCS, tok, key="text", seq_len=seq_len, shuffle=True)
    assert rows.split_documents > 0 and len(rows) < sum(len(d["text"]) + 1 for d in DOCS)
    pieces = []
    for j in range(len(rows)):
        row = rows[j]
        ids, seg, pos = row["tokens"], row["tokens_segmentation"], row["tokens_positions"]
        assert ids.shape == seg.shape == pos.shape == (seq_len + 1,)
        assert ((seg > 0) | (ids == 0)).all() and (np.diff(seg[seg > 0]) >= 0).all()
        for s in range(1, seg.max() + 1):
            here = np.flatnonzero(seg == s)
            assert (pos[here] == np.arange(len(here))).all()
            pieces.append(ids[here])
    # Long documents continue in the next piece, which repeats one token (its first,
    # never a target): joined back, every document comes out whole, exactly once.
    texts, current = [], []
    for piece in pieces:
        current += list(piece) if not current else list(piece[1:])
        if piece[-1] == tok.eos_id:
            texts.append(tok.decode(current))
            current = []
    assert sorted(texts) == sorted(d["text"].decode() for d in DOCS)


def test_packed_documents_refuse_a_chunked_byte_stream():
    chunks = [{"text": np.frombuffer(b"abc" * 10, np.uint8)}]
    with pytest.raises(ConfigError, match="pack_documents"):
        packing.PackedDocuments(chunks, tokenizer.Bytes(), key="text", seq_len=8, shuffle=False)


class CountingBytes(tokenizer.Bytes):
    """Bytes that counts its encode calls."""
    calls = 0

    def encode(self, text):
        CountingBytes.calls += 1
        return super().encode(text)


PAIRS = [{"inputs": f"number {i}", "targets": f"Zahl {i}" * (1 + i % 3)} for i in range(25)]


@pytest.mark.parametrize("kind", ["documents", "pairs"])
def test_second_open_reads_the_cache_and_gives_identical_rows(kind, tmp_path):
    def open_rows():
        where = dict(data_dir=str(tmp_path), split="train", dataset_id="toy/1.0.0|train|25")
        if kind == "documents":
            return packing.PackedDocuments(DOCS, CountingBytes(), key="text", seq_len=16,
                                           shuffle=True, **where)
        return packing.PackedPairs(PAIRS, CountingBytes(), inputs_key="inputs", targets_key="targets",
                                   length=24, pack=True, shuffle=True, **where)

    CountingBytes.calls = 0
    first = open_rows()
    assert CountingBytes.calls > 0
    CountingBytes.calls = 0
    second = open_rows()
    assert CountingBytes.calls == 0                          # nothing tokenised again
    cached = sorted(p.name for p in (tmp_path / token_cache.CACHE_DIR).iterdir())
    assert any(n.startswith("rows-train-") for n in cached), cached
    assert isinstance(second.starts, np.memmap)              # the packing index read back
    assert len(first) == len(second)
    for j in range(len(first)):
        a, b = first[j], second[j]
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_tokenize_op_makes_fixed_rows_of_ids_eos_and_padding():
    from data import ops
    examples = [{"text": b"hi", "label": 1}, {"text": "zw\u00f6lf" * 3, "label": 0}]
    batch = ops.apply("tokenize(key='text', max_len=6)|keep('text', 'label')", examples)
    tok = tokenizer.Bytes()
    assert batch["text"].shape == (2, 6) and batch["text"].dtype == np.int32
    assert batch["text"][0].tolist() == list(tok.encode(b"hi")) + [tok.eos_id, 0, 0, 0]
    assert batch["text"][1].tolist() == list(tok.encode("zw\u00f6lf".encode())[:6])  # cut to 6
    assert batch["label"].tolist() == [1, 0]


@pytest.mark.parametrize("spec, message", [
    ("tokenize(key='text')", "max_len >= 1"),
    ("tokenize(max_len=4, tokenizer='sentencepiece')", "existing tokenizer"),
    ("tokenize(max_len=4, tokenizer='wordpiece')", "unknown tokenizer"),
])
def test_tokenize_op_mistakes_are_one_line(spec, message):
    from data import ops
    with pytest.raises(ConfigError, match=message) as e:
        ops.parse(spec)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_lm1b_gpt_runlocal_trains_two_steps_on_packed_sentences(tfds_dir, tmp_path):
    import json

    from configs.lm1b_gpt import get_config
    from data import sources
    from train import checks, loop
    c = get_config("runlocal")
    c.data.data_dir = tfds_dir
    c.train.steps, c.train.log_every, c.train.eval_every = 2, 1, 2
    c.train.eval_max_batches, c.train.progress = 1, False
    rows, _ = sources.open_split(c.data, c.data.train_split)
    assert isinstance(rows, packing.PackedDocuments)
    assert max(rows[j]["tokens_segmentation"].max() for j in range(20)) > 1  # rows hold several
    checks.check_config(c)
    checks.resolve(c)
    last = loop.train(c, str(tmp_path))
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines] == [1, 2]
    assert np.isfinite(lines[-1]["train/loss"]) and np.isfinite(last["eval/loss"])


def test_packing_for_a_model_without_segments_is_one_line():
    from configs import text_gpt, text_lstm
    from train import checks
    c = text_lstm.get_config("runlocal")
    c.data.pack_documents = True
    with pytest.raises(ConfigError, match="pack_documents=True needs a model") as e:
        checks.check_buildable(c)
    assert "\n" not in str(e.value)
    c.model = text_gpt.get_config("runlocal").model
    checks.check_buildable(c)  # GPT takes segment ids


def test_accelerator_attention_takes_the_segment_mask_as_the_cpu_one_does():
    """GPU/TPU run jax.nn.dot_product_attention with mask + is_causal; the CPU its einsum
    form: the same values for a packed row's (B, 1, T, T) segment mask."""
    from models import attention
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 6, 2, 4))         # (B, T, H, D) each
    seg = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 2, 2]])
    mask = (seg[:, :, None] == seg[:, None, :])[:, None]                      # (B, 1, T, T)
    cpu = attention._einsum_attention(q, k, v, mask, True)
    fused = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
    np.testing.assert_allclose(cpu, fused, atol=1e-5)
    # Token 3 starts segment 2: it attends to itself only, so its output is its own value.
    np.testing.assert_allclose(cpu[0, 3], v[0, 3], atol=1e-6)


def test_a_data_dir_that_cannot_be_written_packs_in_memory(tmp_path, capsys):
    (tmp_path / token_cache.CACHE_DIR).write_text("")  # a file where the cache folder goes
    rows = packing.PackedDocuments(DOCS, tokenizer.Bytes(), key="text", seq_len=16, shuffle=False,
                                   data_dir=str(tmp_path), split="train", dataset_id="toy")
    assert "using it from memory" in capsys.readouterr().err
    alone = packing.PackedDocuments(DOCS, tokenizer.Bytes(), key="text", seq_len=16, shuffle=False)
    assert len(rows) == len(alone) and all((rows[j]["tokens"] == alone[j]["tokens"]).all()
                                           for j in range(len(rows)))
