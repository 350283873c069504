"""Tokenised text sources: packed sequence pairs (translation), packed documents and
token windows (language models).

`PackedPairs` tokenises (input, target) text pairs, appends end-of-sequence to both, and
packs consecutive examples greedily into rows of `length` tokens per side:

    {"inputs", "targets": (L,) int32 ids, 0 = padding,
     "inputs_segmentation", "targets_segmentation": (L,) 1, 2, ... per example, 0 on padding,
     "inputs_positions", "targets_positions": (L,) 0, 1, ... restarting in each example}

`PackedDocuments` (data.pack_documents=True; the Flax LM1B example's and MaxText's rows)
does the same for single documents, one side, rows of L + 1 tokens for a model that reads
L: {"tokens", "tokens_segmentation", "tokens_positions"}, each (L + 1,). Every document
ends with eos, so the model learns where a document stops; the language-model task scores
a target only where it is in the same segment as the token before it, so no document's
last token (its eos) is trained to predict the next document's first token, and a
document's first token is never a target (there is no begin-of-sequence token).

`TokenWindows` is nanoGPT's alternative (prepare.py): every record's text tokenised, each
followed by end-of-sequence, concatenated into one stream; window i is tokens
[i*L, i*L + L + 1) as {"tokens": (L + 1,)}, so attention crosses document boundaries.

Why a packer of our own rather than Grain's packing transforms: Strata's stream is keyed
by position (local batch k = positions k*b..(k+1)*b-1, any process count, resumable from
the batch index alone), and Grain's packers are iterator transforms whose output depends
on what came before on that process. Here packing is a fixed, deterministic index built
when the split is first opened: the examples in a seeded order (training; the split's own
order for evaluation), token lengths of every example, then `greedy_rows` (an example goes
into the current row while every side still fits, else it starts the next row; a pair
longer than L is cut to L). Row j is then one random-access item, so the pipeline
shuffles rows per epoch, shards them over processes and resumes exactly as for any other
source, and no example is dropped. The cost: rows hold the same examples every epoch
(their order and the batches change).

Why tokenisation happens here and not in a per-example `tokenize` op (data/text_ops.py,
which serves fixed-length rows of one example each): the packer must know the token
length of every example before it can say which examples share row j, and a per-example
op sees one example only after the row index is fixed. So the split is tokenised once,
when it is first opened; the ids and the row index are kept on disk next to the prepared
data (data/token_cache.py, keyed by dataset version, split, feature, tokenizer and packing
settings), and later opens read them back instead of tokenising again (WMT14's 4.5M pairs
take minutes the first time).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from data import token_cache
from data.token_cache import field as _field
from data.tokenizer import Tokenizer
from errors import ConfigError, DataError

PACK_SEED = 0  # the fixed order in which training examples are packed


def greedy_rows(lengths: np.ndarray, length: int, pack: bool) -> np.ndarray:
    """(N, K) token lengths of N items on K sides (already cut to `length`) -> (R + 1,)
    row starts: row j holds items starts[j]..starts[j+1]-1, in order; an item goes into the
    current row while every side still fits, else it starts the next row. pack=False: one
    item per row."""
    if not pack:
        return np.arange(len(lengths) + 1)
    starts, used = [0], [0] * lengths.shape[1]
    for i, n in enumerate(lengths.tolist()):  # plain ints: 4x less CPU than numpy per item
        if i > starts[-1] and any(u + m > length for u, m in zip(used, n)):
            starts.append(i)
            used = n
        else:
            used = [u + m for u, m in zip(used, n)]
    starts.append(len(lengths))
    return np.asarray(starts, np.int64)


def cached_rows(data_dir: str | None, split: str, identity: tuple,
                build: Callable[[], np.ndarray]) -> np.ndarray:
    """A packing index from `build()`, kept under `data_dir` keyed by `identity` (None: not kept)."""
    if data_dir is None:
        return build()
    return token_cache.cached_array(token_cache.cache_path(data_dir, "rows", split, *identity), build)


class PackedPairs:
    """Random-access rows of packed, tokenised (input, target) pairs; see the module doc.

    Attributes:
      tokenizer: the Tokenizer the rows were made with.
      num_examples: examples in the split (`pair(i)` gives example i's texts).
    """

    def __init__(self, source: Sequence[dict], tokenizer: Tokenizer, *, inputs_key: str,
                 targets_key: str, length: int, pack: bool, shuffle: bool,
                 data_dir: str | None = None, split: str = "", dataset_id: str = ""):
        """data_dir: where the token ids and the row index are kept (token_cache.py);
        None keeps them in memory only."""
        if length < 2:
            raise DataError(f"data.seq_len must be >= 2 for sequence pairs, got {length}.")
        self.source, self.tokenizer, self.length = source, tokenizer, length
        self.keys = (inputs_key, targets_key)
        self.num_examples = len(source)
        if not self.num_examples:
            raise DataError("the split holds no examples.")
        self.order = (np.random.default_rng(PACK_SEED).permutation(self.num_examples) if shuffle
                      else np.arange(self.num_examples))                       # (N,)
        # Every example is tokenised once (then read back from disk): (N + 1,) offsets into
        # a flat (total,) int32 array per side, eos appended (WMT14: ~1 GB, memory-mapped).
        self.sides = token_cache.tokenized(source, tokenizer, self.keys, data_dir, split, dataset_id)
        lengths = np.stack([side.lengths[self.order] for side in self.sides], axis=1)  # (N, 2)
        self.truncated = int(np.sum(np.any(lengths > length, axis=1)))
        self.starts = cached_rows(
            data_dir, split, ("pairs", *(side.id for side in self.sides), length, pack, shuffle, PACK_SEED),
            lambda: greedy_rows(np.minimum(lengths, length), length, pack))   # (R + 1,)

    def _ids(self, i: int, side: int) -> np.ndarray:
        """Example i's ids (+ eos) on `side`."""
        return self.sides[side].ids(i)

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


class PackedDocuments:
    """Language-model rows of whole documents packed together; see the module doc.

    Row j: {"tokens", "tokens_segmentation", "tokens_positions"}, each (L + 1,) int32:
    documents (each ending with eos) one after another, segment ids 1, 2, ... (0 on the
    padding, whose tokens are 0) and positions restarting at 0 in each segment. A document
    longer than L + 1 tokens is cut into pieces of L + 1 that overlap by one token (as
    windows do, so each of its tokens but the first is a target exactly once); each piece
    is a segment of its own.

    Attributes:
      num_documents: documents in the split; split_documents: how many were cut into pieces.
    """

    def __init__(self, source: Sequence[dict], tokenizer: Tokenizer, *, key: str, seq_len: int,
                 shuffle: bool, data_dir: str | None = None, split: str = "", dataset_id: str = ""):
        if seq_len < 1:
            raise DataError("a tokenised language-model dataset needs data.seq_len > 0.")
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.records, = token_cache.tokenized(source, tokenizer, (key,), data_dir, split, dataset_id)
        if self.records.chunked:
            raise ConfigError(
                "data.pack_documents=True needs records that are documents, but this dataset "
                "stores one byte stream in 64 KiB chunks (text_files, pystdlib); use windows "
                "(data.pack_documents=False) for it.")
        self.num_documents = len(self.records)
        if not self.num_documents:
            raise DataError("the split holds no documents.")
        order = (np.random.default_rng(PACK_SEED).permutation(self.num_documents) if shuffle
                 else np.arange(self.num_documents))                                 # (N,)
        lengths = self.records.lengths[order]                                        # (N,)
        pieces = np.maximum(1, -(-(lengths - 1) // seq_len))                         # (N,)
        self.split_documents = int(np.sum(pieces > 1))
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)                        # (P,)
        self.piece_doc = np.repeat(order, pieces)                                    # (P,)
        self.piece_start = (np.arange(len(first)) - first) * seq_len                 # (P,)
        self.piece_len = np.minimum(seq_len + 1, np.repeat(lengths, pieces) - self.piece_start)
        self.starts = cached_rows(
            data_dir, split, ("documents", self.records.id, seq_len, shuffle, PACK_SEED),
            lambda: greedy_rows(self.piece_len[:, None], seq_len + 1, pack=True))   # (R + 1,)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        j = int(j) + (len(self) if int(j) < 0 else 0)
        if not 0 <= j < len(self):
            raise IndexError(f"row {j} out of range [0, {len(self)})")
        size = self.seq_len + 1
        ids, seg, pos = (np.zeros(size, np.int32) for _ in range(3))               # (L + 1,) each
        used = 0
        for s, p in enumerate(range(self.starts[j], self.starts[j + 1])):
            start, n = int(self.piece_start[p]), int(self.piece_len[p])
            ids[used:used + n] = self.records.ids(int(self.piece_doc[p]))[start:start + n]
            seg[used:used + n] = s + 1
            pos[used:used + n] = np.arange(n)
            used += n
        return {"tokens": ids, "tokens_segmentation": seg, "tokens_positions": pos}


class TokenWindows:
    """Language-model windows over a tokenised split: {"tokens": (L + 1,) int32}."""

    def __init__(self, source: Sequence[dict], tokenizer: Tokenizer, seq_len: int, key: str,
                 data_dir: str | None = None, split: str = "", dataset_id: str = ""):
        if seq_len < 1:
            raise DataError("a tokenised language-model dataset needs data.seq_len > 0.")
        self.tokenizer, self.seq_len = tokenizer, seq_len
        records, = token_cache.tokenized(source, tokenizer, (key,), data_dir, split, dataset_id)
        self.stream = records.flat                                        # (num_tokens,)
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
    else PackedDocuments (data.pack_documents) or TokenWindows of data.seq_len (data.text_key). `open_source(split)` opens a raw
    split (the training split's text trains a SentencePiece tokenizer the first time);
    tokenizers, token ids and packing indices are kept under `data_dir` (token_cache.py)."""
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
    where = dict(data_dir=data_dir, split=split, dataset_id=dataset_id(info, split))
    shuffle = split == c.train_split
    if pair:
        rows = PackedPairs(source, tok, inputs_key=c.inputs_key, targets_key=c.targets_key,
                           length=c.seq_len, pack=c.pack, shuffle=shuffle, **where)
    elif c.pack_documents:
        rows = PackedDocuments(source, tok, key=c.text_key, seq_len=c.seq_len, shuffle=shuffle, **where)
    else:
        rows = TokenWindows(source, tok, c.seq_len, c.text_key, **where)
    return rows, TextInfo(info, tok)
