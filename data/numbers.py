"""`numbers_translate`: English number words -> German number words, generated offline.

    {"inputs": "three hundred and forty-two thousand and seven",
     "targets": "dreihundertzweiundvierzigtausendsieben"}

`NUM_NUMBERS` distinct integers in [0, MAX_NUMBER] are drawn from a fixed seed (half
log-uniform, so short numbers are common, half uniform), and each is written out by
`num2words` (lang="en" and lang="de"). A number is held out (split "test") when
sha1(its decimal string) % 100 < TEST_PERCENT: a stable choice, so no test number is ever
seen in training and the split does not depend on the draw order. The task is a small
but real sequence-to-sequence problem: German writes numbers as one compound word with
the units before the tens ("zweiundvierzig"), so the model must reorder, not copy.
"""
from __future__ import annotations

import hashlib

import numpy as np
import tensorflow_datasets as tfds

MAX_NUMBER = 1_000_000
NUM_NUMBERS = 40_000   # ~38,000 train, ~2,000 test
TEST_PERCENT = 5
SEED = 20241


def split_of(number: int) -> str:
    """"test" for about TEST_PERCENT% of numbers (a hash of the decimal string), else "train"."""
    digest = hashlib.sha1(str(number).encode("ascii")).hexdigest()
    return "test" if int(digest, 16) % 100 < TEST_PERCENT else "train"


def draw_numbers(count: int = NUM_NUMBERS, seed: int = SEED) -> np.ndarray:
    """(count,) distinct int64 numbers in [0, MAX_NUMBER], in draw order (deterministic)."""
    rng = np.random.default_rng(seed)
    seen: dict[int, None] = {}
    while len(seen) < count:
        log_uniform = np.floor(10.0 ** rng.uniform(0.0, np.log10(MAX_NUMBER + 1), count)) - 1
        uniform = rng.integers(0, MAX_NUMBER + 1, count)
        mixed = np.where(rng.uniform(size=count) < 0.5, log_uniform, uniform).astype(np.int64)
        for n in mixed:
            seen.setdefault(int(n), None)
            if len(seen) == count:
                break
    return np.fromiter(seen, np.int64, count)


def pair(number: int) -> dict[str, str]:
    """{"inputs": English words, "targets": German words} for `number`."""
    from num2words import num2words
    return {"inputs": num2words(number, lang="en"), "targets": num2words(number, lang="de")}


class NumbersTranslate(tfds.core.GeneratorBasedBuilder):
    """English number words -> German number words (num2words), no network needed."""

    name = "numbers_translate"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"{NUM_NUMBERS} numbers <= {MAX_NUMBER}, seed {SEED}; "
                              f"sha1(str(n)) % 100 < {TEST_PERCENT} -> test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({"inputs": tfds.features.Text(),
                                                 "targets": tfds.features.Text()}),
            supervised_keys=("inputs", "targets"),
            homepage="https://github.com/savoirfairelinux/num2words",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        splits: dict[str, list[int]] = {"train": [], "test": []}
        for n in draw_numbers():
            splits[split_of(int(n))].append(int(n))
        return {name: self._generate_examples(numbers) for name, numbers in splits.items()}

    def _generate_examples(self, numbers: list[int]):
        for n in numbers:
            yield n, pair(n)
