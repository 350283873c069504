"""The limits measured through the loop and the CLI: the `adversarial` evaluator's keys,
adversarial training (it attacks, and it resumes exactly, on 8 devices), and the `attack`
and `explain` verbs' files. The attacks' mathematics is in test_attacks.py."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import evaluator
from helpers import run_cli, tiny_resnet_config
from train import loop
from train.tasks import build_task


def read_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


@pytest.fixture(scope="module")
def trained(tfds_dir, tmp_path_factory):
    """A tiny ResNet trained 60 steps with an adversarial evaluator at the end."""
    workdir = tmp_path_factory.mktemp("adv_eval")
    c = tiny_resnet_config(tfds_dir, steps=60, batch_size=32, eval_every=60, checkpoint_every=60,
                           log_every=20)
    c.evals.adv = evaluator("adversarial", budgets=(0.3, 0.0, 0.05), steps=3)
    return c, workdir, loop.train(c, str(workdir))


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_adversarial_evaluator_writes_robust_accuracy_keys(trained):
    c, workdir, last = trained
    keys = ["eval/adv/accuracy", "eval/adv/accuracy@linf=0", "eval/adv/accuracy@linf=0.05",
            "eval/adv/accuracy@linf=0.3"]
    assert set(keys) <= set(read_lines(workdir)[-1])
    values = [last[k] for k in keys]
    # the same examples and parameters as the metrics evaluator: the same clean accuracy
    assert values[0] == pytest.approx(last["eval/accuracy"], abs=1e-6)
    assert values[1] == values[0] > 0.2  # no budget, no change (and above chance, 0.1)
    assert values[0] >= values[2] >= values[3]          # never up with the budget
    assert values[3] < values[0]                        # and a large budget hurts


def test_adversarial_evaluator_checks_its_fields(tfds_dir):
    from errors import ConfigError, UnknownNameError
    from train import evaluators
    c = tiny_resnet_config(tfds_dir)
    c.evals.adv = evaluator("adversarial", norm="l1")
    with pytest.raises(UnknownNameError, match="unknown attack norm 'l1'"):
        evaluators.build_evaluators(c)
    c.evals.adv = evaluator("adversarial", budgets=(0.1, -0.2))
    with pytest.raises(ConfigError, match="needs budgets"):
        evaluators.build_evaluators(c)


def _linear_apply(seed=0):
    w = jax.random.normal(jax.random.PRNGKey(seed), (64, 10))
    return lambda x: (x.reshape(x.shape[0], -1) @ w, {})


@pytest.mark.parametrize("kind", ["pgd", "fgsm_rs"])
def test_adversarial_training_attacks_inside_the_ball_and_raises_the_loss(kind):
    task = build_task("classification", adversarial=kind, adv_eps=0.1, adv_steps=3)
    clean = build_task("classification")
    x = jax.random.uniform(jax.random.PRNGKey(1), (8, 8, 8, 1), minval=-1.0, maxval=1.0)
    batch = {"image": x, "label": jnp.arange(8) % 10}
    apply, rng = _linear_apply(), jax.random.PRNGKey(2)
    x_adv = task.adversarial_inputs(apply, x, batch["label"], rng)
    assert float(jnp.abs(x_adv - x).max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= -1.0 and float(x_adv.max()) <= 1.0
    adv_loss = task.loss(apply, batch, rng)[0]
    assert float(adv_loss) > float(clean.loss(apply, batch, rng)[0])
    assert float(task.loss(apply, batch, rng)[0]) == float(adv_loss)  # the key decides
    assert float(task.loss(apply, batch, jax.random.PRNGKey(3))[0]) != float(adv_loss)
    # no gradient flows through the attack: d loss / d params is the loss at x_adv
    w = jax.random.normal(jax.random.PRNGKey(0), (64, 10))

    def loss_of(w):
        return task.loss(lambda v: (v.reshape(v.shape[0], -1) @ w, {}), batch, rng)[0]

    def at_fixed(w):
        return clean.loss(lambda v: (v.reshape(v.shape[0], -1) @ w, {}), dict(batch, image=x_adv), rng)[0]
    np.testing.assert_allclose(jax.grad(loss_of)(w), jax.grad(at_fixed)(w), rtol=1e-5, atol=1e-7)


def test_unknown_adversarial_kind_is_one_line():
    from errors import UnknownNameError
    with pytest.raises(UnknownNameError, match="unknown task.adversarial 'pgdd'. Did you mean 'pgd'"):
        build_task("classification", adversarial="pgdd")


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_adversarial_training_resumes_exactly(tfds_dir, tmp_path):
    c = tiny_resnet_config(tfds_dir, steps=2, checkpoint_every=2, log_every=1)
    c.optimizer.schedule = "constant"  # the cosine schedule depends on train.steps
    c.task.adversarial = "pgd"
    c.task.adv_steps = 2
    c.task.adv_eps = 0.2
    loop.train(c, str(tmp_path / "resumed"))
    c.train.steps = 4
    loop.train(c, str(tmp_path / "resumed"))
    loop.train(c, str(tmp_path / "fresh"))
    resumed, fresh = read_lines(tmp_path / "resumed"), read_lines(tmp_path / "fresh")
    assert [l["step"] for l in resumed] == [1, 2, 3, 4]
    for a, b in zip(resumed, fresh):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-6)


@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_attack_and_explain_verbs_write_their_files(trained, tfds_dir):
    _, workdir, last = trained
    env = {"TFDS_DATA_DIR": tfds_dir}
    result = run_cli("attack", "--workdir", str(workdir), "--config.attack.budgets=(0.05,0.3)",
                     "--config.attack.steps=3", "--config.attack.num_examples=64",
                     "--config.attack.grid_examples=3", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = workdir / "attack"
    assert {"robustness.md", "robustness.csv", "robustness.png", "examples.png"} <= set(os.listdir(out))
    rows = list(csv.DictReader(open(out / "robustness.csv")))
    assert [float(r["budget"]) for r in rows] == [0.0, 0.05, 0.3]
    accuracy = [float(r["accuracy"]) for r in rows]
    assert accuracy == sorted(accuracy, reverse=True) and accuracy[-1] < accuracy[0]
    assert accuracy[0] == pytest.approx(last["eval/adv/accuracy"], abs=1e-6)  # the 64 the run evaluated
    assert "| 0.3 |" in (out / "robustness.md").read_text()

    result = run_cli("explain", "--workdir", str(workdir), "--config.explain.num_examples=3",
                     "--config.explain.ig_steps=8", "--config.explain.smoothgrad_samples=4", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.getsize(workdir / "explain" / "attributions.png") > 1000
    assert "IG completeness" in result.stdout

    result = run_cli("attack", "--workdir", str(workdir), "--config.attack.norm=l3", env=env)
    assert result.returncode == 2 and "unknown attack norm 'l3'" in result.stderr


# --- Bad inputs: one line, exit 2, nothing written ----------------------------------------

def _files(path):
    """Every file under `path` with its size and modification time."""
    return {os.path.relpath(os.path.join(root, f), path): (os.stat(os.path.join(root, f)).st_size,
                                                            os.stat(os.path.join(root, f)).st_mtime_ns)
            for root, _, names in os.walk(path) for f in names}


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
    """A language model (text_gpt, tiny, 2 steps): no classifier to attack."""
    tmp = tmp_path_factory.mktemp("lm")
    text = tmp / "code.py"
    text.write_bytes(open(os.__file__, "rb").read())
    workdir = str(tmp / "run")
    result = run_cli("train", "--config", "configs/text_gpt.py:runlocal=1", "--workdir", workdir,
                     "--config.data.name=text_files", f"--config.data.files={text}",
                     f"--config.data.data_dir={tmp / 'tfds'}", "--config.train.steps=2",
                     "--config.train.eval_every=0", "--config.train.checkpoint_every=2",
                     "--config.train.progress=False")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("case", ["attack_lm", "explain_lm", "negative_budget", "unknown_norm",
                                  "unknown_method", "rollout_without_attention",
                                  "tokens_on_images"])
@pytest.mark.slow  # compiles for 13-65 s (make test-fast leaves it out)
def test_bad_inputs_are_one_line_and_write_nothing(case, trained, lm_workdir, tfds_dir):
    workdir = lm_workdir if case.endswith("_lm") else str(trained[1])
    args, expected = {
        "attack_lm": (["attack"], "needs a classification task"),
        "explain_lm": (["explain", "--config.explain.method=rollout"], "needs a classification task"),
        "tokens_on_images": (["explain", "--config.explain.method=tokens"], "needs a byte language model"),
        "negative_budget": (["attack", "--config.attack.budgets=(0.1,-0.05)"], "finite numbers >= 0"),
        "unknown_norm": (["attack", "--config.attack.norm=l3"], "unknown attack norm 'l3'"),
        "unknown_method": (["explain", "--config.explain.method=lime"], "unknown explain.method 'lime'"),
        "rollout_without_attention": (["explain", "--config.explain.method=rollout"],
                                      "needs a model that sows its attention"),
    }[case]
    before = _files(workdir)
    result = run_cli(*args, "--workdir", workdir, env={"TFDS_DATA_DIR": tfds_dir})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strata: error:") and expected in lines[0], lines
    assert _files(workdir) == before


def test_explain_on_a_language_model_writes_the_token_view(lm_workdir):
    result = run_cli("explain", "--workdir", lm_workdir, "--config.explain.prompt=def f(x):",
                     "--config.explain.ig_steps=64")
    assert result.returncode == 0, result.stderr[-3000:]
    page = open(os.path.join(lm_workdir, "explain", "tokens.html")).read()
    assert page.count("<span") == 2 * len("def f(x):") and "loss (bits)" in page
    assert "\x1b[48;5;" in result.stdout and "| 7 | ) |" in result.stdout
    gap = float(result.stdout.split("IG completeness gap ")[1].split()[0])
    assert abs(gap) < 0.05  # IG sums to the logit change from zero embeddings


def test_a_run_saved_before_a_key_existed_gets_its_default(tmp_path):
    """attack/explain on a workdir whose config.json predates `explain.method`."""
    from configs.digits_resnet import get_config
    from commands.workdir import saved_config
    c = get_config()
    saved = c.to_dict()
    del saved["explain"]["method"], saved["explain"]["prompt"]
    (tmp_path / "config.json").write_text(json.dumps(saved, default=list))
    loaded = saved_config(str(tmp_path), {"explain.method": "rollout"}, defaults={"explain": c.explain})
    assert loaded.explain.method == "rollout" and loaded.explain.prompt == c.explain.prompt
    assert loaded.explain.ig_steps == c.explain.ig_steps
