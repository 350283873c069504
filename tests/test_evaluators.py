"""Evaluators: several per run, each with its own split, cadence and keys; every config
trains two steps and evaluates at its `:runlocal` size."""
import glob
import importlib
import json
import os

import numpy as np
import pytest

from configs.common import evaluator
from helpers import REPO, tiny_resnet_config
from train import evaluators, loop


def read_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def test_two_evaluators_on_different_splits_write_both(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=4, eval_every=4, checkpoint_every=4, log_every=2)
    c.evals.on_train = evaluator("metrics", split="train", every=2, max_batches=1)
    loop.train(c, str(tmp_path))
    lines = {l["step"]: l for l in read_lines(tmp_path)}
    # the default evaluator (test split, every 4) keeps eval/<metric>; the named one
    # (train split, every 2) writes eval/on_train/<metric>
    assert "eval/accuracy" not in lines[2] and "eval/on_train/accuracy" in lines[2]
    assert {"eval/accuracy", "eval/loss", "eval/on_train/accuracy", "eval/on_train/loss"} <= set(lines[4])
    # different splits give different numbers (2 test batches vs 1 train batch)
    assert lines[4]["eval/loss"] != lines[4]["eval/on_train/loss"]

    # `run.py eval`'s path: every evaluator, the same numbers as the last training eval
    exp = loop.Experiment(c, str(tmp_path), read_only=True)
    state, _ = exp.restore(4)
    again = exp.evaluate(state)
    exp.checkpointer.close()
    for key in ("eval/accuracy", "eval/on_train/accuracy", "eval/on_train/loss"):
        np.testing.assert_allclose(again[key], lines[4][key], rtol=1e-6)


def test_evaluator_fallbacks_are_one_rule(tfds_dir):
    c = tiny_resnet_config(tfds_dir)
    c.train.eval_batch_size = 32
    c.evals.extra = evaluator("metrics", split="train", preprocess="to_float", batch_size=8, prefix="eval/x/")
    default, extra = evaluators.resolve(c, "default"), evaluators.resolve(c, "extra")
    assert (default["split"], default["preprocess"], default["batch_size"], default["prefix"]) == (
        "test", c.data.eval_preprocess, 32, "eval/")
    assert default["every"] == c.train.eval_every and default["max_batches"] == c.train.eval_max_batches
    assert (extra["split"], extra["preprocess"], extra["batch_size"], extra["prefix"]) == (
        "train", "to_float", 8, "eval/x/")


def test_unknown_evaluator_type_and_field_are_one_line(tfds_dir):
    from errors import UnknownNameError
    c = tiny_resnet_config(tfds_dir)
    c.evals.default.type = "metricz"
    with pytest.raises(UnknownNameError, match="unknown evaluator type 'metricz'. Did you mean 'metrics'"):
        evaluators.build_evaluators(c)
    c = tiny_resnet_config(tfds_dir)
    c.evals.samples = evaluator("sample_quality", samples_per_klass=3)
    with pytest.raises(UnknownNameError, match="has no field.*samples_per_klass.*Valid:.*samples_per_class"):
        evaluators.build_evaluators(c)


def test_an_evaluator_that_cannot_serve_the_task_is_refused(tfds_dir, tmp_path):
    from errors import ConfigError
    c = tiny_resnet_config(tfds_dir)
    c.evals.unigram = evaluator("unigram_baseline")  # a classifier has no bytes to count
    with pytest.raises(ConfigError, match="needs a byte-level language model"):
        loop.Experiment(c, str(tmp_path))


def _configs() -> list:
    """Every config, marked heavy (`make test-heavy`, CI's second step: ~20 configs of
    compilation); those on datasets that are not embedded (recipes for ImageNet, CIFAR,
    WMT, ...) run on TFDS mock data at full size."""
    from data import sources
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        name = os.path.basename(path)[:-3]
        if name.startswith(("_", "common")):
            continue
        data = importlib.import_module(f"configs.{name}").get_config("runlocal").data.name
        embedded = data.split(":")[0].split("/")[0] in sources.EMBEDDED
        out.append(pytest.param(name, embedded, marks=pytest.mark.heavy, id=name))
    return out


@pytest.mark.parametrize("name,embedded", _configs())
def test_every_config_trains_two_steps_and_evaluates(name, embedded, tfds_dir, tmp_path):
    import contextlib

    import tensorflow_datasets as tfds
    c = importlib.import_module(f"configs.{name}").get_config("runlocal")
    c.data.data_dir = tfds_dir
    c.train.steps = 2
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_max_batches = 1
    c.train.progress = False
    from train import checks
    checks.check_config(c)
    checks.resolve(c)
    checks.check_buildable(c)
    mock = contextlib.nullcontext() if embedded else tfds.testing.mock_data(
        num_examples=200, policy=tfds.testing.MockPolicy.USE_CODE)
    with mock:
        last = loop.train(c, str(tmp_path))
    lines = read_lines(tmp_path)
    assert [l["step"] for l in lines] == [1, 2]
    assert np.isfinite(lines[-1]["train/loss"])
    evals = {k for k in last if k.startswith("eval/")}
    assert evals and all(np.isfinite(last[k]) for k in evals), last
    assert c.checkpoint.best_metric in last or not c.checkpoint.best_metric
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["mesh"]["rules"] and saved["mesh"]["rules"][0][0] == "batch"  # resolved, not ()
