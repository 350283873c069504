"""`translation`: decodes a split and scores the output against the references: corpus
BLEU (sacrebleu, its default 13a tokenisation, as papers report newstest scores) and
exact match (the fraction of outputs equal to their reference, after stripping spaces
at the ends). Outputs of one word each (numbers_translate's German compounds) have no
word 2-grams, so word BLEU is 0 for them whatever their quality: such configs set
`bleu_tokenize="char"` (BLEU over characters).

Examples are read in the split's order, `batch_size` at a time (the first
`max_batches * batch_size` of them when `max_batches` > 0), their inputs tokenised as in
training, and decoded with the run's `config.sample` settings (beam_size, length_penalty,
max_decode_len) unless this evaluator's own `beam_size` / `length_penalty` are set.
Every process decodes the same examples (no sharding of the search).
"""
from __future__ import annotations

import dataclasses
import types

import numpy as np

from errors import ConfigError
from train.evaluators.base import EvalContext, Evaluator


@dataclasses.dataclass
class TranslationQuality(Evaluator):
    """Reports `bleu` (0-100) and `exact_match` (0-1); also keeps `last_outputs`."""
    beam_size: int = 0              # 0 = config.sample.beam_size
    length_penalty: float = -1.0    # < 0 = config.sample.length_penalty
    bleu_tokenize: str = "13a"      # sacrebleu's tokeniser: "13a" (WMT), "char" (one-word
                                    # outputs such as German number compounds), "intl", ...

    def check(self, task, source) -> None:
        if not hasattr(task, "translate_ids"):
            raise ConfigError(f"evaluator {self.name!r} (translation) needs the translation task.")
        if not hasattr(source(self.split, self.preprocess), "pair"):
            raise ConfigError(f"evaluator {self.name!r} (translation) needs sequence pairs; set "
                              "data.inputs_key and data.targets_key.")

    def run(self, ctx: EvalContext) -> dict[str, float]:
        import sacrebleu
        source = ctx.source(self.split, self.preprocess)
        tokenizer, length = source.tokenizer, source.length
        settings = types.SimpleNamespace(
            beam_size=self.beam_size or ctx.sample.beam_size,
            length_penalty=self.length_penalty if self.length_penalty >= 0 else ctx.sample.length_penalty,
            max_decode_len=ctx.sample.max_decode_len)
        n = source.num_examples
        if self.max_batches:
            n = min(n, self.max_batches * self.batch_size)
        model, params = ctx.task_context.model, ctx.task_context.variables["params"]
        hypotheses, references = [], []
        for start in range(0, n, self.batch_size):
            indices = range(start, min(start + self.batch_size, n))
            inputs = np.zeros((self.batch_size, length), np.int32)      # (B, L), padded rows
            for r, i in enumerate(indices):
                ids = source.encode_inputs(i)
                inputs[r, :len(ids)] = ids
            out = ctx.task.translate_ids(model, params, inputs, settings, tokenizer.eos_id)
            for r, i in enumerate(indices):
                hypotheses.append(tokenizer.decode(out[r]).strip())
                references.append(source.pair(i)[1].strip())
        self.last_outputs = list(zip(hypotheses, references))
        bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=self.bleu_tokenize).score
        exact = float(np.mean([h == r for h, r in zip(hypotheses, references)])) if n else 0.0
        return {"bleu": float(bleu), "exact_match": exact}
