"""`sample_quality`: how good a class-conditional generator's samples are, judged by a
fixed classifier: its accuracy on the samples (`sample_accuracy`), a Frechet distance in
its feature space (`fd`), and the floor the real eval images reach (`fd_real_floor`).

The judge is a scikit-learn MLP (one hidden layer, fixed `random_state`) fitted on the
training split, in the model's pixel space (the splits read with the evaluator's
preprocessing, images flattened). It is deterministic, fits in seconds on small datasets
(the 8x8 digits: 98.1% test accuracy) and is fitted once per process.

    judge = judge_for(train_source, eval_source, "to_float(-1, 1)")
    judge.accuracy(samples, labels)        # share the judge labels as conditioned
    judge.fd(samples)                      # FD(train features, sample features)
    judge.fd_real_floor                    # FD(train features, eval features)

The Frechet distance (Heusel et al. 2017, as in FID) between Gaussians fitted to two
feature sets is ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). Like FID it is biased
upwards for small sets, so compare a sample set with the floor at equal size (the floor
uses the whole eval split).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from errors import ConfigError
from train.evaluators.base import EvalContext, Evaluator

HIDDEN = 128          # judge features: the hidden layer's ReLU activations
JUDGE_SEED = 0
JUDGE_MAX_ITER = 400


def one_blas_thread():
    """These matrices are tiny: BLAS threads beside JAX's made the fit much slower on a
    busy 2-core machine, and one thread also makes the sums reproducible."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), in float64."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2): the latter is symmetric PSD, so
    its trace is the sum of the square roots of its eigenvalues (exact and stable, no
    complex parts as `scipy.linalg.sqrtm(S1 @ S2)` can give for singular covariances).
    """
    with one_blas_thread():
        s1h = _sqrt_psd(sigma1)
        eig = np.linalg.eigvalsh(s1h @ sigma2 @ s1h)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = np.asarray(mu1) - np.asarray(mu2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def load_split(source: Sequence[dict], preprocess: str, input_key: str = "image",
               label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, ...) float32, labels (N,) int) of a whole split after `preprocess`."""
    from data import ops
    batch = ops.apply(preprocess, [source[i] for i in range(len(source))])
    return np.asarray(batch[input_key], np.float32), np.asarray(batch[label_key]).astype(int)


@dataclasses.dataclass
class Judge:
    """A fitted classifier with the feature statistics of the real splits."""
    classifier: Any                  # sklearn.neural_network.MLPClassifier
    train_stats: tuple[np.ndarray, np.ndarray]
    test_accuracy: float             # on the eval split: what sample accuracy can hope for
    fd_real_floor: float             # FD(train, eval split): what `fd` can hope for

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, ...) images -> (N, HIDDEN) hidden-layer ReLU activations."""
        x = np.asarray(images, np.float64).reshape(len(images), -1)
        return np.maximum(x @ self.classifier.coefs_[0] + self.classifier.intercepts_[0], 0.0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.predict(np.asarray(images, np.float64).reshape(len(images), -1))

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Share of `images` the judge puts in the class given by `labels`."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))

    def fd(self, images: np.ndarray) -> float:
        """Frechet distance between the training split's features and those of `images`."""
        return frechet_distance(*self.train_stats, *gaussian_stats(self.features(images)))


def fit_judge(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Judge:
    """Fits the MLP judge on `train` (images, labels) and scores it on `test`."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    x, y = train
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=JUDGE_MAX_ITER,
                        random_state=JUDGE_SEED)
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(np.asarray(x, np.float64).reshape(len(x), -1), y)
    judge = Judge(clf, (np.zeros(0), np.zeros(0)), 0.0, 0.0)
    judge.train_stats = gaussian_stats(judge.features(x))
    judge.test_accuracy = judge.accuracy(*test)
    judge.fd_real_floor = judge.fd(test[0])
    return judge


_JUDGES: dict[tuple, tuple[Judge, Any]] = {}  # one per pair of splits and preprocessing, per process


def judge_for(train_source: Sequence[dict], eval_source: Sequence[dict], preprocess: str,
              input_key: str = "image", label_key: str = "label") -> Judge:
    """The judge fitted on `train_source`, its floors from `eval_source`; cached."""
    key = (id(train_source), id(eval_source), preprocess, input_key, label_key)
    if key not in _JUDGES:  # the sources are kept with the judge, so their ids stay unique
        judge = fit_judge(load_split(train_source, preprocess, input_key, label_key),
                          load_split(eval_source, preprocess, input_key, label_key))
        _JUDGES[key] = (judge, (train_source, eval_source))
    return _JUDGES[key][0]


@dataclasses.dataclass
class SampleQuality(Evaluator):
    """Samples `samples_per_class` images per class with `config.sample`'s sampler and
    judges them against the training split (fit) and this evaluator's split (floor)."""
    samples_per_class: int = 36

    def check(self, task, source) -> None:
        if not hasattr(task, "generate") or not getattr(task, "conditional", False):
            raise ConfigError(f"evaluator {self.name!r} (sample_quality) needs a class-conditional "
                              "generative task (e.g. diffusion with task.num_classes > 0).")
        if self.samples_per_class < 1:
            raise ConfigError(f"config.evals.{self.name}.samples_per_class must be >= 1, "
                              f"got {self.samples_per_class}.")

    def judge(self, ctx: EvalContext) -> Judge:
        return judge_for(ctx.source(ctx.train_split, self.preprocess), ctx.source(self.split, self.preprocess),
                         self.preprocess,
                         ctx.task.input_key, ctx.task.label_key)

    def describe_samples(self, ctx: EvalContext, images: np.ndarray, labels: np.ndarray) -> str:
        """One line: how often the judge agrees with the labels the samples were drawn for."""
        judge = self.judge(ctx)
        return (f"strata: the judge classifier agrees with the row label on "
                f"{judge.accuracy(images, labels):.1%} (real {self.split} images: "
                f"{judge.test_accuracy:.1%})")

    def run(self, ctx: EvalContext) -> dict[str, float]:
        judge = self.judge(ctx)
        labels = np.repeat(np.arange(ctx.task.num_classes), self.samples_per_class)
        samples = ctx.task.generate(ctx.task_context, labels, ctx.sample)
        return {"sample_accuracy": judge.accuracy(samples, labels), "fd": judge.fd(samples),
                "fd_real_floor": judge.fd_real_floor}
