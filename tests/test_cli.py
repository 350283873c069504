"""run.py as a user meets it: mistakes end in one line on stderr and exit code 2."""
import os

import pytest

from helpers import run_cli


@pytest.mark.parametrize("args,expected", [
    (["train", "--config.train.stepz=3"], "unknown config key 'train.stepz'. Did you mean 'train.steps'?"),
    (["train", "--config.train.steps=abc"], "wrong value for config.train.steps: 'abc' (expects an int)"),
    (["train", "--config", "configs/nope.py"], "config file 'configs/nope.py' not found. Available: configs/"),
    (["train", "--config.model.name=resnt"], "unknown model 'resnt'. Did you mean 'resnet'? Valid:"),
    (["train", "--config.data.name=digitz"], "unknown dataset 'digitz'. Did you mean 'digits'?"),
    (["train", "--config.train.steps=0"], "config.train.steps must be positive, got 0."),
    (["train", "--config.train.batch_size=-8"], "config.train.batch_size must be positive"),
    (["trian"], "unknown command 'trian'. Did you mean 'train'?"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, expected, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(*args, "--workdir", str(workdir), env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [l for l in result.stderr.splitlines() if l.startswith("strata: error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (workdir / "checkpoints").exists()


def test_workdir_that_is_a_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("precious")
    result = run_cli("train", "--workdir", str(path))
    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr
    assert path.read_text() == "precious"
