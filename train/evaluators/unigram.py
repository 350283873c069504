"""`unigram_baseline`: the byte entropy of the scored eval text, in bits per byte: the loss
a language model would reach that knew the split's byte frequencies but no context.

It scores the same targets as a `metrics` evaluator with the same split, batch size and
max_batches: the first min(windows, max_batches * batch_size) windows, each window's
tokens after the first."""
from __future__ import annotations

import dataclasses

import numpy as np

from errors import ConfigError
from train.evaluators.base import EvalContext, Evaluator


@dataclasses.dataclass
class UnigramBaseline(Evaluator):
    """Reports `unigram_bits_per_byte`; computed once per run (the data does not change)."""

    def __post_init__(self):
        self._bits: float | None = None

    def check(self, task, source) -> None:
        if getattr(task, "vocab_size", None) != 256:
            raise ConfigError(f"evaluator {self.name!r} (unigram_baseline) needs a byte-level "
                              "language model (task.vocab_size=256).")
        if not hasattr(source(self.split, self.preprocess), "target_counts"):
            raise ConfigError(f"evaluator {self.name!r} (unigram_baseline) needs token windows; "
                              "set data.seq_len > 0.")

    def run(self, ctx: EvalContext) -> dict[str, float]:
        if self._bits is None:
            limit = self.max_batches * self.batch_size or None
            counts = ctx.source(self.split, self.preprocess).target_counts(limit).astype(np.float64)
            p = counts[counts > 0] / counts.sum()
            self._bits = float(-(p * np.log2(p)).sum())
        return {"unigram_bits_per_byte": self._bits}
