"""Sweeps: trial declaration and names, a killed-and-rerun sweep that finishes only what
was left, printed commands that reproduce the sweep's files, failures that do not stop
it, and reports (Markdown, CSV, plots) of sweeps, seeds and single runs."""
import csv
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from configs import common
from helpers import REPO, run_cli
from commands import report, trials as sweeps
from train.checks import ConfigError

CONFIG = "tests/sweep_config.py"
NAMES = ["learning_rate=0.05,width=4,seed=0", "learning_rate=0.05,width=8,seed=0",
         "learning_rate=0.2,width=4,seed=0", "learning_rate=0.2,width=8,seed=0"]


# --- Declaring trials (no training) -------------------------------------------------------

def test_product_zip_and_random_search():
    assert common.product({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert common.product(common.zip_axes({"w": [64, 128], "h": [2, 4]}), {"lr": [0.1]}) == [
        {"w": 64, "h": 2, "lr": 0.1}, {"w": 128, "h": 4, "lr": 0.1}]
    space = {"lr": common.log_uniform(1e-4, 1e-1), "depth": [8, 14, 20], "steps": 100}
    first = common.random_search(space, 5, seed=3)
    assert first == common.random_search(space, 5, seed=3) != common.random_search(space, 5, seed=4)
    assert len({json.dumps(t) for t in first}) == 5
    assert all(1e-4 <= t["lr"] <= 1e-1 and t["depth"] in (8, 14, 20) and t["steps"] == 100 for t in first)
    with pytest.raises(TypeError, match=r"write \[0.1\]"):
        common.product({"lr": 0.1})
    with pytest.raises(ValueError, match="one length"):
        common.zip_axes({"a": [1, 2], "b": [1]})


def test_names_are_readable_stable_and_unique():
    trials = [{"optimizer.learning_rate": lr, "model.depth": d, "train.steps": 100}
              for lr in (0.1, 3e-5) for d in (8, 20)]
    assert sweeps.group_names(trials) == ["learning_rate=0.1,depth=8", "learning_rate=0.1,depth=20",
                                          "learning_rate=3e-05,depth=8", "learning_rate=3e-05,depth=20"]
    same = [{"model.width": 1, "data.width": 2}, {"model.width": 3, "data.width": 2}]
    assert sweeps.group_names(same) == ["width=1", "width=3"]  # data.width never varies: not named
    both = [{"model.width": 1, "data.width": 2}, {"model.width": 3, "data.width": 4}]
    assert sweeps.group_names(both) == ["model.width=1,data.width=2", "model.width=3,data.width=4"]
    odd = sweeps.group_names([{"data.files": "a/b c"}, {"data.files": "a_b_c"}])
    assert all(re.fullmatch(r"[\w.=,+-]+", n) for n in odd) and len(set(odd)) == 2
    seeded = sweeps.expand([{"model.depth": 8}, {"model.depth": 20, "seed": 5}], base_seed=0, seeds=2)
    assert [t.name for t in seeded] == ["depth=8,seed=0", "depth=8,seed=1",
                                        "depth=20,seed=5", "depth=20,seed=6"]
    assert [t.overrides for t in seeded][2] == {"model.depth": 20}


def test_trial_overrides_are_checked_before_anything_runs():
    from configs.digits_resnet import get_config
    base = get_config()
    assert sweeps.trial_config(base, {"optimizer.learning_rate": 0.3}, 2).optimizer.learning_rate == 0.3
    with pytest.raises(ConfigError, match="Did you mean 'optimizer.learning_rate'"):
        sweeps.trial_config(base, {"optimizer.learnig_rate": 0.3}, 0)
    with pytest.raises(ConfigError, match="model.depth=8.5"):
        sweeps.trial_config(base, {"model.depth": 8.5}, 0)
    with pytest.raises(ConfigError, match="train.steps must be positive"):
        sweeps.trial_config(base, {"train.steps": 0}, 0)


@pytest.mark.parametrize("config_file", [
    "configs/digits_resnet.py", "configs/digits_resnet.py:runlocal=true",
    "configs/text_gpt.py", "configs/text_gpt.py:runlocal=true"])
def test_embedded_sweeps_are_valid(config_file):
    path, _, arg = config_file.partition(":")
    if not os.path.exists(os.path.join(REPO, path)):
        pytest.skip(f"{path} not there")
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        pytest.skip(f"{path} has no get_sweep")
    trials = sweeps.load_sweep(os.path.join(REPO, config_file))
    base = module.get_config(arg or None)
    for t in sweeps.expand(trials, base.seed, 1):
        sweeps.trial_config(base, t.overrides, t.seed)
    assert 2 <= len(trials) <= 8


# --- A real sweep, killed and rerun -------------------------------------------------------

@pytest.fixture(scope="module")
def env(tfds_dir, tmp_path_factory):
    """For run.py subprocesses. The trials share a JAX compilation cache: the same
    executables, compiled once (most of a tiny trial's time is compiling)."""
    cache = str(tmp_path_factory.mktemp("jax_cache"))
    return {"TFDS_DATA_DIR": tfds_dir, "JAX_COMPILATION_CACHE_DIR": cache}


def _full(env):
    return {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, **env}


def _finished(workdir):
    return os.path.isdir(os.path.join(workdir, "checkpoints", "8"))


def _wait_until_free(workdir):
    """Blocks while a trial of the killed sweep still saves its checkpoint."""
    path = os.path.join(workdir, ".lock")
    if os.path.exists(path):
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)


def _sweep_starts(workdir):
    with open(os.path.join(workdir, "train.log")) as f:
        return f.read().count("strata sweep: python")


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory, env):
    """Sweep 4 trials 2 at a time; SIGKILL the sweep once a trial has finished; rerun it."""
    root = str(tmp_path_factory.mktemp("sweep"))
    sweep_dir = os.path.join(root, "sw")
    args = ["sweep", "--config", CONFIG, "--workdir", sweep_dir, "--parallel", "2"]
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "run.py"), *args], cwd=REPO,
                            env=_full(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not any(_finished(os.path.join(sweep_dir, n)) for n in NAMES):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 240, "no trial finished in 240 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    for name in NAMES:  # its trials got SIGTERM from the kernel (PDEATHSIG) and stop
        if os.path.isdir(os.path.join(sweep_dir, name)):
            _wait_until_free(os.path.join(sweep_dir, name))
    before = {n for n in NAMES if _finished(os.path.join(sweep_dir, n))}
    starts = {n: _sweep_starts(os.path.join(sweep_dir, n)) for n in before}
    rerun = run_cli(*args, env=env)
    return sweep_dir, before, starts, rerun


def test_rerun_finishes_only_what_was_left(killed_and_rerun):
    sweep_dir, before, starts, rerun = killed_and_rerun
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert 1 <= len(before) < 4
    assert f"{len(before)} finished already (skipped), {4 - len(before)} to run" in rerun.stderr
    summary = f"4 trials: {4 - len(before)} ran now, {len(before)} had finished before, 0 failed"
    assert summary in rerun.stderr
    for name in NAMES:
        workdir = os.path.join(sweep_dir, name)
        assert _finished(workdir)
        if name in before:  # not started again
            assert _sweep_starts(workdir) == starts[name] == 1
            assert f"started {name}" not in rerun.stderr
        steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
        assert steps == [2, 4, 6, 8]
    sweep = json.load(open(os.path.join(sweep_dir, "sweep.json")))
    assert [t["name"] for t in sweep["trials"]] == NAMES
    assert sweep["axes"] == ["optimizer.learning_rate", "model.width"]


def test_report_has_one_row_per_trial_with_the_run_values(killed_and_rerun):
    sweep_dir = killed_and_rerun[0]
    printed = report.write_report(sweep_dir)
    rows = list(csv.DictReader(open(os.path.join(sweep_dir, "report.csv"))))
    assert [r["trial"] for r in rows] == NAMES
    for row in rows:
        metrics = [json.loads(l) for l in open(os.path.join(sweep_dir, row["trial"], "metrics.jsonl"))]
        evals = [m["eval/accuracy"] for m in metrics if "eval/accuracy" in m]
        assert float(row["eval/accuracy final"]) == evals[-1]
        assert float(row["eval/accuracy best"]) == max(evals)
        assert float(row["train/loss final"]) == metrics[-1]["train/loss"]
        assert row["steps"] == "8" and float(row["time (s)"]) > 0
        assert (float(row["optimizer.learning_rate"]), int(row["model.width"])) in [
            (0.05, 4), (0.05, 8), (0.2, 4), (0.2, 8)]
    table = [l for l in open(os.path.join(sweep_dir, "report.md")) if l.startswith("| learning_rate=")]
    assert len(table) == 4 and all(l in printed + "\n" for l in table)
    for plot in ("train_loss.png", "eval_accuracy.png"):
        with open(os.path.join(sweep_dir, "plots", plot), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    single = report.write_report(os.path.join(sweep_dir, NAMES[0]))  # one run directory
    assert len([l for l in single.splitlines() if l.startswith(f"| {NAMES[0]} |")]) == 1


def test_printed_commands_reproduce_the_sweep_files(killed_and_rerun, tmp_path, env):
    sweep_dir, before = killed_and_rerun[:2]
    other = str(tmp_path / "by_hand")
    printed = run_cli("sweep", "--config", CONFIG, "--workdir", other, "--print_commands")
    assert printed.returncode == 0, printed.stderr[-2000:]
    lines = printed.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all(l.startswith(f"python run.py train --config {CONFIG} --workdir ") for l in lines)
    # One trial that finished before the kill and one finished by the rerun (one that
    # resumed from a checkpoint of the killed sweep, where there is one), run by hand.
    rest = sorted(set(NAMES) - before, key=lambda n: "resumed from step" not in
                  open(os.path.join(sweep_dir, n, "train.log")).read())
    chosen = [sorted(before)[0], rest[0]]
    procs = []
    for line in lines:
        argv = line.split()
        if os.path.basename(argv[argv.index("--workdir") + 1]) in chosen:
            procs.append(subprocess.Popen([sys.executable, *argv[1:]], cwd=REPO, env=_full(env),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    for name in chosen:
        ours = open(os.path.join(other, name, "metrics.jsonl"), "rb").read()
        assert ours == open(os.path.join(sweep_dir, name, "metrics.jsonl"), "rb").read()


def test_failed_trials_are_reported_and_the_sweep_goes_on(tmp_path, env):
    result = run_cli("sweep", "--config", f"{CONFIG}:fail=true", "--workdir", str(tmp_path / "sw"),
                     env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    for name in ("depth=7,seed=0", "depth=9,seed=0"):
        pattern = rf"FAILED {name} \(exit 2, \d+s\): strata: error: .*6n\+2"
        assert re.search(pattern, result.stderr), result.stderr
    assert "2 trials: 0 ran now, 0 had finished before, 2 failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_sweeps_are_one_line_errors(tmp_path):
    result = run_cli("sweep", "--config", "configs/digits_vit.py", "--workdir", str(tmp_path / "sw"))
    assert result.returncode == 2
    assert "has no get_sweep(arg)" in result.stderr and "Traceback" not in result.stderr


# --- Reports of seeds, from files alone ---------------------------------------------------

def _fake_run(workdir, accs, seed):
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"seed": seed, "train": {"steps": 20, "log_every": 10},
                   "checkpoint": {"best_metric": "eval/accuracy", "best_mode": "max"}}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for i, a in enumerate(accs):
            f.write(json.dumps({"step": 10 * (i + 1), "eval/accuracy": a, "eval/loss": 1 - a,
                                "train/loss": 2 - a}) + "\n")
    with open(os.path.join(workdir, "perf.jsonl"), "w") as f:  # 10 s, then a resume: 5 s
        f.write('{"step": 10, "time": 100.0, "perf/steps_per_sec": 1.0}\n')
        f.write('{"step": 10, "time": 900.0, "perf/steps_per_sec": 2.0}\n')
        f.write('{"step": 20, "time": 905.0, "perf/steps_per_sec": 2.0}\n')


def test_report_of_seeds_is_mean_and_std(tmp_path):
    trials = []
    for lr, accs in ((0.1, [[0.5, 0.7], [0.6, 0.9]]), (0.3, [[0.8, 0.6], [0.8, 0.4]])):
        for seed, a in enumerate(accs):
            name = f"lr={lr},seed={seed}"
            _fake_run(str(tmp_path / name), a, seed)
            trials.append({"name": name, "group": f"lr={lr}", "seed": seed,
                           "overrides": {"optimizer.lr": lr}})
    json.dump({"config": "x.py", "config_overrides": {}, "seeds": 2, "axes": ["optimizer.lr"],
               "fixed": {}, "trials": trials}, open(tmp_path / "sweep.json", "w"))
    text = report.write_report(str(tmp_path))
    assert "| lr=0.1 | 0.1 | 2 | 20 | 0.8 ± 0.14 | 0.8 ± 0.14 | 0.2 ± 0.14 | 0.2 ± 0.14 |" in text
    assert "| lr=0.3 | 0.3 | 2 | 20 | 0.5 ± 0.14 | 0.8 ± 0 | 0.5 ± 0.14 | 0.2 ± 0 |" in text
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert float(rows[0]["eval/accuracy final"]) == pytest.approx(0.8)
    assert float(rows[0]["eval/accuracy final std"]) == pytest.approx(0.1414, abs=1e-4)
    assert float(rows[0]["time (s)"]) == pytest.approx(20.0)
    plots = ["eval_accuracy.png", "eval_loss.png", "train_loss.png"]
    assert sorted(os.listdir(tmp_path / "plots")) == plots


def test_report_draws_curves_against_a_numeric_key(tmp_path):
    """x = data.train_examples (4 values; the batch size zipped with it is no x and splits no line),
    one line per family, mean and spread over 2 seeds."""
    trials = []
    for family, base in (("cnn", 0.5), ("vit", 0.3)):
        for n, batch in ((50, 50), (100, 100), (200, 128), (800, 128)):
            for seed in range(2):
                name = f"n={n},family={family},seed={seed}"
                acc = base + n / 2000 + 0.1 * seed
                _fake_run(str(tmp_path / name), [acc / 2, acc], seed)
                trials.append({"name": name, "group": f"n={n},family={family}", "seed": seed,
                               "overrides": {"data.train_examples": n, "train.batch_size": batch,
                                             "config": f"family={family}"}})
    json.dump({"config": "x.py", "config_overrides": {}, "seeds": 2,
               "axes": ["data.train_examples", "train.batch_size", "config"], "fixed": {},
               "trials": trials}, open(tmp_path / "sweep.json", "w"))
    report.write_report(str(tmp_path))
    plots = os.listdir(tmp_path / "plots")
    assert "by_train_examples_eval_accuracy.png" in plots and "by_train_examples_eval_loss.png" in plots
    assert not any(p.startswith("by_batch_size") for p in plots)  # decided by N: no curve
    text = open(tmp_path / "report.md").read()
    assert "| train_examples | config=family=cnn | config=family=vit |" in text
    assert "| 50 | 0.575 ± 0.071 (n=2) | 0.375 ± 0.071 (n=2) |" in text
    assert "| 800 | 0.95 ± 0.071 (n=2) | 0.75 ± 0.071 (n=2) |" in text


def test_a_trial_can_set_the_config_argument(tmp_path):
    """configs/digits_data_efficiency.py: three model families in one sweep, each trial
    checked against its own family's config before anything runs."""
    result = run_cli("sweep", "--config", "configs/digits_data_efficiency.py", "--workdir",
                     str(tmp_path / "sw"), "--print_commands")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    assert len(commands) == 18
    assert ("configs/digits_data_efficiency.py:family=vit --workdir "
            f"{tmp_path}/sw/train_examples=50,batch_size=50,config=family=vit,seed=0 "
            "--config.data.train_examples=50 --config.train.batch_size=50 --config.seed=0") in commands[1]
    file, overrides = sweeps.trial_file("c.py:family=cnn", {"config": "family=rnn", "seed": 1})
    assert (file, overrides) == ("c.py:family=rnn", {"seed": 1})
    assert sweeps.load_config(file.replace("c.py", "configs/digits_data_efficiency.py")).model.name == "rnn"
    with pytest.raises(ConfigError, match="unknown config arg 'famly'"):
        sweeps.load_config("configs/digits_data_efficiency.py:famly=rnn")
