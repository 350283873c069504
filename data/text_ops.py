"""Per-example text ops: `tokenize` turns a text feature into a fixed-length row of ids.

    "tokenize(key='text', max_len=256)|keep('text', 'label')"                 # bytes
    "tokenize(key='sentence', max_len=128, tokenizer='~/spm/wmt32k.model')"

For one example per row (text classification, scoring): the ids of the text, then
end-of-sequence, cut to `max_len` and padded with 0. Packed language-model and
translation rows are not made here: the packer needs every example's length before any
row exists, so those sources tokenise when a split opens (data/packing.py says why).
A tokenizer trained on the data (`sentencepiece`) is made by that path too; this op takes
one that exists: `bytes`, `gpt2` or a `.model` file.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from data import tokenizer as tokenizer_lib
from data.row_random import RowRandom
from errors import ConfigError

Op = Callable[[dict, RowRandom], dict]


def tokenize(key: str = "text", max_len: int = 0, tokenizer: str = "bytes", eos: bool = True) -> Op:
    """example[key] (str, bytes or uint8 array) -> (max_len,) int32 ids (+ eos), 0-padded."""
    if not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"tokenize needs max_len >= 1 (the row length), got {max_len!r}.")
    if tokenizer == "sentencepiece":
        raise ConfigError("tokenize takes an existing tokenizer (bytes, gpt2 or a .model path), "
                          "not 'sentencepiece': data.tokenizer trains one when a split opens.")
    tok = tokenizer_lib.build(tokenizer)  # unknown names and missing files: one line

    def op(example: dict, rand: RowRandom) -> dict:
        ids = tok.encode(example[key])                                 # (n,)
        if eos:
            ids = np.append(ids, tok.eos_id)
        row = np.zeros(max_len, np.int32)                              # (max_len,)
        row[:min(len(ids), max_len)] = ids[:max_len]
        return {**example, key: row}
    return op


EXAMPLE_OPS: dict[str, Callable[..., Op]] = {"tokenize": tokenize}
