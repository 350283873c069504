"""Tokenizers, packing of sequence pairs, the numbers_translate data, the rsqrt schedule,
and the one-line errors of tokenised text."""
import types

import ml_collections
import numpy as np
import pytest

from data import numbers, packing, tokenizer
from errors import ConfigError

PAIRS = [{"inputs": f"number {i} " * (1 + i % 3), "targets": f"Zahl {i}" + "!" * (i % 5)}
         for i in range(40)]
CORPUS = [f"{w} {v}" for w in ("one", "two", "three", "four", "hundred", "thousand")
          for v in ("eins", "zwei", "drei", "hundert", "tausend", "und")] * 20


def test_bytes_round_trip_with_pad_and_eos():
    tok = tokenizer.Bytes()
    ids = tok.encode("Zwölf")
    assert ids.min() >= 2 and tok.vocab_size == 258
    assert tok.decode(np.concatenate([ids, [tok.eos_id, 7, 9], [0, 0]])) == "Zwölf"


def test_sentencepiece_is_trained_once_per_settings_and_round_trips(tmp_path, monkeypatch):
    calls = []
    texts = lambda: (calls.append(1), iter(CORPUS))[1]
    kw = dict(vocab_size=20, model_type="unigram", character_coverage=1.0, max_sentences=1000,
              data_dir=str(tmp_path), dataset_id="toy/1.0.0|train|120", texts=texts)
    first = tokenizer.build("sentencepiece", **kw)
    second = tokenizer.build("sentencepiece", **kw)        # reuses the stored model
    assert len(calls) == 1 and first.path == second.path and first.vocab_size == 20
    other = tokenizer.build("sentencepiece", **{**kw, "vocab_size": 21})  # new settings
    assert len(calls) == 2 and other.path != first.path
    text = "three thousand und zwei"
    assert first.decode(np.append(first.encode(text), first.eos_id)) == text
    assert tokenizer.build(first.path).id == first.id     # a path to an existing .model


@pytest.mark.parametrize("kind, kw, message", [
    ("wordpiece", {}, "unknown tokenizer 'wordpiece'"),
    ("/no/such/file.model", {}, "does not exist"),
    ("sentencepiece", {"vocab_size": 5000}, "larger than this data supports"),
])
def test_bad_tokenizer_settings_are_one_line(kind, kw, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as e:
        tokenizer.build(kind, **{"vocab_size": 20, "max_sentences": 1000, "data_dir": str(tmp_path),
                                 "dataset_id": "toy", "texts": lambda: iter(CORPUS), **kw})
    assert "\n" not in str(e.value)


def test_packing_keeps_every_example_once_with_segments_and_positions():
    tok = tokenizer.Bytes()
    rows = packing.PackedPairs(PAIRS, tok, inputs_key="inputs", targets_key="targets",
                               length=48, pack=True, shuffle=True)
    assert len(rows) < len(PAIRS) and rows.truncated == 0
    seen = []
    for j in range(len(rows)):
        row = rows[j]
        for side in ("inputs", "targets"):
            seg, pos, ids = row[f"{side}_segmentation"], row[f"{side}_positions"], row[side]
            assert ((ids > 0) == (seg > 0)).all()
            for s in range(1, seg.max() + 1):
                here = np.flatnonzero(seg == s)
                assert (pos[here] == np.arange(len(here))).all() and ids[here][-1] == tok.eos_id
        for s in range(1, row["targets_segmentation"].max() + 1):
            seen.append(tok.decode(row["targets"][row["targets_segmentation"] == s]))
    assert sorted(seen) == sorted(p["targets"] for p in PAIRS)
    single = packing.PackedPairs(PAIRS, tok, inputs_key="inputs", targets_key="targets",
                                 length=48, pack=False, shuffle=False)
    assert len(single) == len(PAIRS) and tok.decode(single[3]["targets"]) == PAIRS[3]["targets"]


def test_numbers_split_and_draw_are_stable():
    assert numbers.split_of(342007) == numbers.split_of(342007)
    drawn = numbers.draw_numbers(500, seed=1)
    assert len(set(drawn.tolist())) == 500 and (drawn == numbers.draw_numbers(500, seed=1)).all()
    assert drawn.max() <= numbers.MAX_NUMBER and drawn.min() >= 0
    held_out = sum(numbers.split_of(int(n)) == "test" for n in range(10_000))
    assert 300 < held_out < 700
    assert numbers.pair(4012) == {"inputs": "four thousand and twelve", "targets": "viertausendzwölf"}


def test_rsqrt_schedule():
    from train.optimizers import learning_rate_schedule
    c = ml_collections.ConfigDict(dict(learning_rate=7e-4, warmup_steps=4000, schedule="rsqrt",
                                       end_lr_fraction=0.0))
    s = learning_rate_schedule(c, 100_000)
    np.testing.assert_allclose([s(2000), s(4000), s(16000)], [3.5e-4, 7e-4, 3.5e-4], rtol=1e-6)
    np.testing.assert_allclose(s(16000), 512 ** -0.5 * 16000 ** -0.5, rtol=2e-3)  # the paper's


def test_a_prompt_that_encodes_to_nothing_is_one_line():
    from train.tasks.base import TaskContext
    from train.tasks.translation import Translation
    ctx = TaskContext(model=None, variables={}, data_info=types.SimpleNamespace(
        tokenizer=tokenizer.Bytes()), mesh=None, rng=None)
    settings = ml_collections.ConfigDict(dict(prompt="", beam_size=1, length_penalty=0.6,
                                              max_decode_len=0))
    with pytest.raises(ConfigError, match="encodes to no tokens"):
        Translation().sample(ctx, settings)
