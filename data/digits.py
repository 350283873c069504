"""TFDS builder `digits`: the UCI handwritten digits that scikit-learn ships (offline).

1,797 real 8x8 grey-scale images of the digits 0-9 (values 0..16, stored here scaled to
0..255 so that every TFDS image op applies). The train/test split is stratified and
seeded, so every machine prepares the same 1,437 / 360 examples.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SEED = 0
TEST_FRACTION = 0.2


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's copy of the UCI ML hand-written digits (Alpaydin & Kaynak, 1998)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/20 split, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships with scikit-learn
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        index = np.arange(len(images))
        train_idx, test_idx = train_test_split(
            index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target)
        return {
            "train": self._generate_examples(images, digits.target, np.sort(train_idx)),
            "test": self._generate_examples(images, digits.target, np.sort(test_idx)),
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i])}
