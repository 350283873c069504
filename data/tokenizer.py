"""Tokenizers: text <-> int32 ids, chosen by `config.data.tokenizer`.

    bytes            UTF-8 bytes; ids = byte + 2 (0 = padding, 1 = end of sequence), 258 ids.
                     (The byte-window language models, data.seq_len > 0 without a tokenizer
                     pipeline, keep raw bytes 0..255 as ids: data/text.py.)
    sentencepiece    a SentencePiece model trained on the training split with
                     data.vocab_size / spm_model_type / spm_character_coverage; trained once
                     and stored under <data_dir>/strata_tokenizers/, its file name a hash of
                     the settings and of the dataset (name, version, config, split sizes),
                     so a second run, or another run on the same data, reuses it.
    PATH.model       an existing SentencePiece model.
    gpt2             GPT-2's byte-level BPE through tiktoken (optional; offline it needs
                     tiktoken's cached vocabulary, see `Gpt2`).

Every tokenizer uses 0 for padding and has an `eos_id`; `decode` stops at the first end
of sequence and skips padding. SentencePiece models are trained with pad=0, eos=1, unk=2
and no begin-of-sequence id, as the Flax WMT example does.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from errors import ConfigError, DataError

PAD_ID, EOS_ID = 0, 1
KINDS = ("bytes", "sentencepiece", "gpt2", "PATH.model")


class Tokenizer(Protocol):
    """What the pipeline, the tasks and the evaluators use."""
    vocab_size: int
    eos_id: int

    def encode(self, text: str | bytes) -> np.ndarray:
        """(N,) int32 ids, no end of sequence appended."""

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of the ids up to the first eos_id, padding skipped."""


def _text(text: str | bytes) -> str:
    if isinstance(text, np.ndarray):  # uint8 chunks of a byte stream (text_files, pystdlib)
        text = text.tobytes()
    return text.decode("utf-8", errors="replace") if isinstance(text, (bytes, np.bytes_)) else str(text)


def _until_eos(ids: Sequence[int] | np.ndarray, eos_id: int) -> list[int]:
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == eos_id:
            break
        if i != PAD_ID:
            out.append(int(i))
    return out


class Bytes:
    """UTF-8 bytes as ids byte + 2; 0 pads and 1 ends a sequence."""
    offset = 2
    vocab_size = 256 + offset
    eos_id = EOS_ID
    id = "bytes"

    def encode(self, text: str | bytes) -> np.ndarray:
        raw = text.tobytes() if isinstance(text, np.ndarray) else text
        raw = raw if isinstance(raw, (bytes, np.bytes_)) else str(raw).encode("utf-8")
        return np.frombuffer(raw, np.uint8).astype(np.int32) + self.offset   # (N,)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        kept = [i - self.offset for i in _until_eos(ids, self.eos_id) if i >= self.offset]
        return bytes(kept).decode("utf-8", errors="replace")


class SentencePiece:
    """A SentencePiece model file (pad 0, eos 1 when trained here)."""

    def __init__(self, path: str):
        import sentencepiece as spm
        if not os.path.isfile(path):
            raise ConfigError(f"SentencePiece model {path!r} does not exist (config.data.tokenizer); "
                              "give an existing .model file or tokenizer=sentencepiece to train one.")
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = int(self._sp.get_piece_size())
        self.eos_id = int(self._sp.eos_id())
        if self._sp.pad_id() != PAD_ID or self.eos_id < 0:
            raise ConfigError(f"SentencePiece model {path!r} has pad id {self._sp.pad_id()} and eos "
                              f"id {self.eos_id}; Strata needs pad=0 and an eos id "
                              "(train with --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1).")
        with open(path, "rb") as f:
            self.id = "spm-" + hashlib.sha1(f.read()).hexdigest()[:16]

    def encode(self, text: str | bytes) -> np.ndarray:
        return np.asarray(self._sp.encode(_text(text)), np.int32)   # (N,)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._sp.decode(_until_eos(ids, self.eos_id))


class Gpt2:
    """GPT-2's BPE (tiktoken "gpt2", 50,257 ids, eos = <|endoftext|> = 50256). Id 0 ("!")
    is a real token here, so use it for language-model windows, not for padded rows."""
    id = "gpt2"

    def __init__(self):
        try:
            import tiktoken
            self._enc = tiktoken.get_encoding("gpt2")
        except ImportError:
            raise ConfigError("tokenizer 'gpt2' needs tiktoken: pip install tiktoken.") from None
        except Exception:
            raise ConfigError(
                "tokenizer 'gpt2' could not load GPT-2's BPE (no network?): provide the file "
                "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe (and "
                "encoder.json) in tiktoken's cache, $TIKTOKEN_CACHE_DIR, e.g. by running "
                "tiktoken.get_encoding('gpt2') once with network and copying that folder.") from None
        self.vocab_size = int(self._enc.n_vocab)
        self.eos_id = int(self._enc.eot_token)

    def encode(self, text: str | bytes) -> np.ndarray:
        return np.asarray(self._enc.encode_ordinary(_text(text)), np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.eos_id:
                break
            out.append(int(i))
        return self._enc.decode(out)


def spm_path(data_dir: str, dataset_id: str, settings: dict) -> str:
    """Where the SentencePiece model for `settings` trained on `dataset_id` is kept."""
    key = hashlib.sha1(repr((dataset_id, sorted(settings.items()))).encode("utf-8")).hexdigest()[:16]
    name = dataset_id.split("/")[0].replace(":", "_")
    return os.path.join(data_dir, "strata_tokenizers", f"{name}-{settings['model_type']}"
                        f"{settings['vocab_size']}-{key}.model")


def train_sentencepiece(texts: Iterable[str], path: str, *, vocab_size: int, model_type: str,
                        character_coverage: float, max_sentences: int) -> None:
    """Trains a SentencePiece model on `texts` (one sentence each, at most `max_sentences`)
    and writes it atomically to `path`; an impossible vocab size is a ConfigError."""
    import sentencepiece as spm
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                if i >= max_sentences:
                    break
                f.write(text.replace("\n", " ") + "\n")
        prefix = os.path.join(tmp, "spm")
        try:
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
                character_coverage=character_coverage, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2,
                bos_id=-1, input_sentence_size=max_sentences, shuffle_input_sentence=True,
                max_sentence_length=1 << 16, minloglevel=2, num_threads=os.cpu_count() or 1)
        except RuntimeError as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if "Vocabulary size" in message or "vocab_size" in message:
                raise ConfigError(f"data.vocab_size={vocab_size} is larger than this data supports "
                                  f"for a {model_type} SentencePiece model ({message}); lower it.") from None
            raise ConfigError(f"SentencePiece training failed: {message}") from None
        os.replace(prefix + ".model", path)


def build(kind: str, *, vocab_size: int = 0, model_type: str = "unigram",
          character_coverage: float = 1.0, max_sentences: int = 1_000_000, data_dir: str = "",
          dataset_id: str = "", texts: Callable[[], Iterable[str]] | None = None) -> Tokenizer:
    """The tokenizer `kind` names (see the module docstring). For "sentencepiece",
    `texts()` yields the training split's sentences; they are read only when no model for
    these settings and this `dataset_id` exists yet under `data_dir`."""
    if kind == "bytes":
        return Bytes()
    if kind == "gpt2":
        return Gpt2()
    if kind.endswith(".model"):
        return SentencePiece(os.path.expanduser(kind))
    if kind != "sentencepiece":
        raise ConfigError(f"unknown tokenizer {kind!r} (config.data.tokenizer). Valid: "
                          f"{', '.join(KINDS)}.")
    if vocab_size < 3:
        raise ConfigError(f"tokenizer=sentencepiece needs data.vocab_size >= 3, got {vocab_size}.")
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise ConfigError(f"unknown data.spm_model_type {model_type!r}. Valid: unigram, bpe, char, word.")
    settings = dict(vocab_size=vocab_size, model_type=model_type,
                    character_coverage=character_coverage, max_sentences=max_sentences)
    path = spm_path(data_dir, dataset_id, settings)
    if not os.path.isfile(path):
        if texts is None:
            raise DataError(f"no SentencePiece model at {path} and no training text to make one.")
        import sys
        print(f"strata: training a SentencePiece tokenizer into {path} (once)", file=sys.stderr, flush=True)
        train_sentencepiece(texts(), path, **settings)
    return SentencePiece(path)
