"""Training on part of a split, for data-efficiency and transfer studies: the first N
examples of a fixed, seeded permutation of the split (optionally N / C per class, or only
some classes; `data.eval_classes` filters the evaluation splits alike). The choice depends on the split and `seed` alone, never on the run's seed,
the process count or the batch size, so runs that differ in those train on the same
examples, and a larger N holds every example of a smaller one (without class balance).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from errors import ConfigError, DataError


class Subset:
    """A random-access view of `source` at `indices` (sorted: reads stay in file order)."""

    def __init__(self, source: Sequence[dict], indices: np.ndarray):
        self.source, self.indices = source, np.sort(np.asarray(indices, np.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.source[int(self.indices[i])]

    @property
    def arrays(self) -> dict[str, np.ndarray] | None:
        """The chosen rows as arrays when the source holds arrays (data/array_cache.py)."""
        arrays = getattr(self.source, "arrays", None)
        return None if arrays is None else {key: value[self.indices] for key, value in arrays.items()}


def _labels(source: Sequence[dict], label_key: str) -> np.ndarray:
    """(N,) int labels of every example (one read of the split)."""
    try:
        return np.asarray([int(np.asarray(source[i][label_key])) for i in range(len(source))])
    except KeyError:
        raise ConfigError(f"data.label_key {label_key!r} is not a feature of the split; "
                          "class-balanced or class-filtered subsets need integer labels.") from None


def choose(source: Sequence[dict], num_examples: int = 0, *, seed: int = 0,
           classes: Sequence[int] = (), balanced: bool = False,
           label_key: str = "label") -> np.ndarray:
    """Indices into `source` of the chosen examples.

    Args:
      num_examples: how many (0 = all that `classes` leaves).
      seed: the permutation's seed.
      classes: keep only examples with these labels (empty = all classes).
      balanced: take num_examples / (number of classes) from each class, in permutation
        order; num_examples must be a multiple of the class count.
      label_key: the integer label feature (read only for `classes` or `balanced`).
    """
    if num_examples < 0:
        raise ConfigError(f"config.data.train_examples must not be negative, got {num_examples}.")
    order = np.random.default_rng([seed, 0x5EB5E7]).permutation(len(source))  # (N,)
    if not classes and not balanced:
        if num_examples > len(source):
            raise DataError(f"data.train_examples={num_examples} but the training split has "
                            f"{len(source)} examples.")
        return order[:num_examples or len(source)]
    labels = _labels(source, label_key)[order]
    keep = np.isin(labels, list(classes)) if classes else np.ones(len(order), bool)
    order, labels = order[keep], labels[keep]
    if not balanced:
        if num_examples > len(order):
            raise DataError(f"data.train_examples={num_examples} but classes {list(classes)} "
                            f"have {len(order)} examples.")
        return order[:num_examples or len(order)]
    present = np.unique(labels)
    if num_examples % len(present):
        raise ConfigError(f"a class-balanced subset of {num_examples} examples over "
                          f"{len(present)} classes: make data.train_examples a multiple of "
                          f"{len(present)}.")
    per_class = num_examples // len(present) if num_examples else None
    chosen = []
    for c in present:
        of_class = order[labels == c][:per_class]
        if per_class and len(of_class) < per_class:
            raise DataError(f"class {c} has {len(of_class)} training examples, fewer than the "
                            f"{per_class} per class data.train_examples={num_examples} asks for.")
        chosen.append(of_class)
    return np.concatenate(chosen)


def subset(source: Sequence[dict], data_config) -> Sequence[dict]:
    """`source` itself, or the Subset that `data.train_examples`, `data.train_classes` and
    `data.class_balanced` describe."""
    d = data_config
    if not d.train_examples and not d.train_classes and not d.class_balanced:
        return source
    return Subset(source, choose(source, d.train_examples, seed=d.subset_seed,
                                 classes=tuple(d.train_classes), balanced=d.class_balanced,
                                 label_key=d.label_key))


def eval_subset(source: Sequence[dict], data_config) -> Sequence[dict]:
    """`source` itself, or its examples whose label is in `data.eval_classes`, in file order
    (evaluating a transfer study on the new classes only)."""
    d = data_config
    if not d.eval_classes:
        return source
    indices = choose(source, classes=tuple(d.eval_classes), label_key=d.label_key)
    if not len(indices):
        raise DataError(f"data.eval_classes={list(d.eval_classes)}: the split has no example of them.")
    return Subset(source, indices)
