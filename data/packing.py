"""Tokenised text sources: packed sequence pairs (translation) and token windows (LMs).

`PackedPairs` tokenises (input, target) text pairs, appends end-of-sequence to both, and
packs consecutive examples greedily into rows of `length` tokens per side:

    {"inputs", "targets": (L,) int32 ids, 0 = padding,
     "inputs_segmentation", "targets_segmentation": (L,) 1, 2, ... per example, 0 on padding,
     "inputs_positions", "targets_positions": (L,) 0, 1, ... restarting in each example}

Why a packer of our own rather than Grain's packing transforms: Strata's stream is keyed
by position (local batch k = positions k*b..(k+1)*b-1, any process count, resumable from
the batch index alone), and Grain's packers are iterator transforms whose output depends
on what came before on that process. Here packing is a fixed, deterministic index built
once when the split is opened: the examples in a seeded order (training; the split's own
order for evaluation), token lengths of every example, then greedy first-in-order rows
(an example goes into the current row while both sides still fit, else it starts the
next row; an example longer than L is cut to L). Row j is then one random-access item,
so the pipeline shuffles rows per epoch, shards them over processes and resumes exactly
as for any other source, and no example is dropped. The cost: rows hold the same examples
every epoch (their order and the batches change), and the lengths are computed once per
run (seconds for numbers_translate; WMT14's 4.5M pairs take minutes).

`TokenWindows` is the language-model counterpart of data/text.py's byte windows: every
record's text tokenised, each followed by end-of-sequence, concatenated (nanoGPT's
prepare.py), stored once as an .npy file next to the prepared data and memory-mapped;
window i is tokens [i*L, i*L + L + 1) as {"tokens": (L + 1,)}.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from data.tokenizer import Tokenizer
from errors import DataError

PACK_SEED = 0  # the fixed order in which training examples are packed


def _field(example: dict, key: str) -> bytes | str:
    if key not in example:
        raise DataError(f"the dataset has no feature {key!r} (config.data.inputs_key / "
                        f"targets_key / text_key). Valid: {', '.join(sorted(example))}.")
    return example[key]


def greedy_rows(lengths: np.ndarray, length: int, pack: bool) -> np.ndarray:
    """(N, 2) token lengths (already cut to `length`) -> (R + 1,) row starts: row j holds
    examples starts[j]..starts[j+1]-1; with pack=False one example per row."""
    if not pack:
        return np.arange(len(lengths) + 1)
    starts, used = [0], np.zeros(2, np.int64)
    for i, n in enumerate(lengths):
        if i > starts[-1] and np.any(used + n > length):
            starts.append(i)
            used[:] = 0
        used += n
    starts.append(len(lengths))
    return np.asarray(starts, np.int64)


class PackedPairs:
    """Random-access rows of packed, tokenised (input, target) pairs; see the module doc.

    Attributes:
      tokenizer: the Tokenizer the rows were made with.
      num_examples: examples in the split (`pair(i)` gives example i's texts).
    """

    def __init__(self, source: Sequence[dict], tokenizer: Tokenizer, *, inputs_key: str,
                 targets_key: str, length: int, pack: bool, shuffle: bool):
        if length < 2:
            raise DataError(f"data.seq_len must be >= 2 for sequence pairs, got {length}.")
        self.source, self.tokenizer, self.length = source, tokenizer, length
        self.keys = (inputs_key, targets_key)
        self.num_examples = len(source)
        if not self.num_examples:
            raise DataError("the split holds no examples.")
        self.order = (np.random.default_rng(PACK_SEED).permutation(self.num_examples) if shuffle
                      else np.arange(self.num_examples))                       # (N,)
        # Every example is read and tokenised once, here; rows are then cut from memory
        # (a flat (total,) int32 array per side with (N + 1,) offsets; WMT14: ~1 GB).
        ids: tuple[list, list] = ([], [])
        for i in range(self.num_examples):
            example = self.source[i]
            for side in range(2):
                ids[side].append(self._encode(example, side))
        self._flat = [np.concatenate(x) for x in ids]                           # (total,)
        self._offsets = [np.concatenate([[0], np.cumsum([len(a) for a in x])]) for x in ids]
        lengths = np.stack([np.diff(o)[self.order] for o in self._offsets], axis=1)  # (N, 2)
        self.truncated = int(np.sum(np.any(lengths > length, axis=1)))
        self.starts = greedy_rows(np.minimum(lengths, length), length, pack)  # (R + 1,)

    def _encode(self, example: dict, side: int) -> np.ndarray:
        """An example's ids on side 0 (inputs) or 1 (targets), end of sequence appended."""
        ids = self.tokenizer.encode(_field(example, self.keys[side]))
        return np.append(ids, np.int32(self.tokenizer.eos_id)).astype(np.int32)

    def _ids(self, i: int, side: int) -> np.ndarray:
        """Example i's ids (+ eos) on `side`, from memory."""
        offsets = self._offsets[side]
        return self._flat[side][offsets[i]:offsets[i + 1]]

    def pair(self, i: int) -> tuple[str, str]:
        """Example i (in the split's order) as (input text, target text)."""
        ex = self.source[i]
        return tuple(t.decode("utf-8") if isinstance(t, bytes) else str(t)
                     for t in (_field(ex, self.keys[0]), _field(ex, self.keys[1])))

    def encode_inputs(self, i: int) -> np.ndarray:
        """Example i's input ids (+ eos), cut to `length`: (<= L,) int32."""
        return self._ids(i, 0)[:self.length]

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        j = int(j)
        if j < 0:
            j += len(self)
        if not 0 <= j < len(self):
            raise IndexError(f"row {j} out of range [0, {len(self)})")
        out = {}
        for side, name in enumerate(("inputs", "targets")):
            ids = np.zeros(self.length, np.int32)           # (L,)
            seg = np.zeros(self.length, np.int32)
            pos = np.zeros(self.length, np.int32)
            used = 0
            for s, e in enumerate(self.order[self.starts[j]:self.starts[j + 1]]):
                piece = self._ids(int(e), side)[:self.length - used]
                n = len(piece)
                ids[used:used + n] = piece
                seg[used:used + n] = s + 1
                pos[used:used + n] = np.arange(n)
                used += n
            out[name], out[f"{name}_segmentation"], out[f"{name}_positions"] = ids, seg, pos
        return out


class TokenWindows:
    """Language-model windows over a tokenised split: {"tokens": (L + 1,) int32}."""

    def __init__(self, source: Sequence[dict], tokenizer: Tokenizer, seq_len: int, key: str,
                 cache_path: str):
        self.tokenizer, self.seq_len = tokenizer, seq_len
        if not os.path.isfile(cache_path):
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            eos = np.asarray([tokenizer.eos_id], np.int32)
            pieces = []
            for i in range(len(source)):
                value = _field(source[i], key)
                # Text records are documents (each ends with eos); uint8 records are
                # 64 KiB chunks of one byte stream (text_files): no eos between them.
                ids = tokenizer.encode(value)
                pieces.append(ids if isinstance(value, np.ndarray) else np.concatenate([ids, eos]))
            stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
            tmp = f"{cache_path}.{os.getpid()}.tmp.npy"
            np.save(tmp, stream.astype(np.int32))
            os.replace(tmp, cache_path)
        self.stream = np.load(cache_path, mmap_mode="r")                   # (num_tokens,)
        self._len = max((len(self.stream) - 1) // seq_len, 0)
        if self._len == 0:
            raise DataError(f"a split of {len(self.stream)} tokens holds no window of seq_len + 1 "
                            f"= {seq_len + 1} tokens; lower data.seq_len or add text.")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        i = int(i) + (self._len if int(i) < 0 else 0)
        if not 0 <= i < self._len:
            raise IndexError(f"window {i} out of range [0, {self._len})")
        start = i * self.seq_len
        return {"tokens": np.asarray(self.stream[start:start + self.seq_len + 1], np.int32)}


def stream_cache_path(data_dir: str, dataset_id: str, split: str, tokenizer_id: str) -> str:
    """Where the token stream of `split` tokenised by `tokenizer_id` is kept."""
    key = hashlib.sha1(repr((dataset_id, split, tokenizer_id)).encode("utf-8")).hexdigest()[:16]
    return os.path.join(data_dir, "strata_tokenizers", f"tokens-{split.replace('/', '_')}-{key}.npy")


# --- opening a split through a tokenizer -----------------------------------------------

class TextInfo:
    """A dataset's tfds info plus the `tokenizer` its rows were made with (what sampling
    and the translation evaluator need to encode prompts and decode outputs)."""

    def __init__(self, info, tokenizer: Tokenizer):
        self._info, self.tokenizer = info, tokenizer

    def __getattr__(self, name: str):
        return getattr(self._info, name)


def _texts(source: Sequence[dict], keys: Sequence[str]):
    for i in range(len(source)):
        for key in keys:
            value = _field(source[i], key)
            yield value.decode("utf-8") if isinstance(value, bytes) else str(value)


def dataset_id(info, train_split: str) -> str:
    """Identifies the data a tokenizer is trained on: name/config/version and split size."""
    try:
        split = info.splits[train_split.split("[")[0]]
        size = f"{split.num_examples}:{split.num_bytes}"
    except Exception:  # mocked or unknown sizes
        size = "?"
    return f"{info.full_name}|{train_split}|{size}"


def tokenized_split(data_config, split: str, source: Sequence[dict], info, open_source,
                    data_dir: str) -> tuple[Sequence[dict], TextInfo]:
    """`split` of `config.data` as tokenised rows: PackedPairs when data.targets_key is set,
    else TokenWindows of data.seq_len (data.text_key). `open_source(split)` opens a raw
    split (the training split's text trains a SentencePiece tokenizer the first time);
    tokenizers and token streams are kept under `data_dir`."""
    from data import tokenizer as tokenizer_lib
    c = data_config
    pair = bool(c.targets_key)
    keys = (c.inputs_key, c.targets_key) if pair else (c.text_key,)
    ds_id = dataset_id(info, c.train_split)
    train = source if split == c.train_split else None
    tok = tokenizer_lib.build(
        c.tokenizer, vocab_size=c.vocab_size, model_type=c.spm_model_type,
        character_coverage=c.spm_character_coverage, max_sentences=c.spm_max_sentences,
        data_dir=data_dir, dataset_id=ds_id,
        texts=lambda: _texts(train if train is not None else open_source(c.train_split), keys))
    if pair:
        rows = PackedPairs(source, tok, inputs_key=c.inputs_key, targets_key=c.targets_key,
                           length=c.seq_len, pack=c.pack, shuffle=split == c.train_split)
    else:
        if c.seq_len < 1:
            raise DataError("a tokenised language-model dataset needs data.seq_len > 0.")
        rows = TokenWindows(source, tok, c.seq_len, c.text_key,
                            stream_cache_path(data_dir, ds_id, split, tok.id))
    return rows, TextInfo(info, tok)
