"""train.trackers (W&B next to TensorBoard) and train.profile_steps, as a user runs them:
an offline W&B run holds the metrics of metrics.jsonl, a resumed run continues the same
W&B run, a missing wandb is one line; a profiled run leaves a trace that inspect lists."""
from __future__ import annotations

import glob
import json
import os
import struct

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow

WANDB = '--config.train.trackers=("tensorboard", "wandb")'


def read_wandb_run(path: str) -> tuple[str, list[dict]]:
    """(run id, history rows) of an offline `run-ID.wandb` file: W&B's LevelDB-style log of
    protobuf Records (a 7-byte file header, 32 KiB blocks, 7-byte chunk headers)."""
    from wandb.proto import wandb_internal_pb2 as pb
    with open(path, "rb") as f:
        data = f.read()
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            break
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            records.append(buf)
            buf = b""
    run_id, rows = "", []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                         for i in record.history.item})
    return run_id, rows


def _train(workdir: str, tfds_dir: str, *extra: str):
    return run_cli("train", "--config", "configs/text_gpt.py:runlocal", "--workdir", workdir,
                   "--config.train.progress=False", f"--config.data.data_dir={tfds_dir}", *extra,
                   env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})


def test_offline_wandb_run_holds_the_metrics_and_resume_continues_it(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    r = _train(workdir, tfds_dir, WANDB)  # 20 steps, logged every 5
    assert r.returncode == 0, r.stderr[-2000:]
    with open(os.path.join(workdir, "wandb_id")) as f:
        run_id = f.read().strip()
    (first,) = glob.glob(os.path.join(workdir, "wandb", "offline-run-*", f"run-{run_id}.wandb"))
    got_id, rows = read_wandb_run(first)
    assert got_id == run_id
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    by_step = {row["_step"]: row for row in rows}
    assert sorted(by_step) == [m["step"] for m in metrics] == [5, 10, 15, 20]
    for m in metrics:
        for key, value in m.items():
            if key != "step":
                assert by_step[m["step"]][key] == pytest.approx(value, rel=1e-12), key
    assert all("perf/steps_per_sec" in row for row in rows)
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    r = _train(workdir, tfds_dir, WANDB, "--config.train.steps=25", "--allow_config_change")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb")))
    assert len(runs) == 2 and all(p.endswith(f"run-{run_id}.wandb") for p in runs)
    second = [p for p in runs if p != first][0]
    got_id, rows = read_wandb_run(second)
    assert got_id == run_id and [row["_step"] for row in rows] == [25]


def test_missing_wandb_or_unknown_tracker_is_one_line(tmp_path, tfds_dir):
    shadow = tmp_path / "shadow" / "wandb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no wandb here')\n")
    r = run_cli("train", "--config", "configs/text_gpt.py:runlocal", "--workdir", str(tmp_path / "a"),
                f"--config.data.data_dir={tfds_dir}", WANDB,
                env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("strata: error: train.trackers asks for 'wandb'")
    assert "pip install wandb" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--config", "configs/text_gpt.py:runlocal", "--workdir", str(tmp_path / "b"),
                f"--config.data.data_dir={tfds_dir}", '--config.train.trackers=("mlflow",)')
    assert r.returncode == 2 and "tracker" in r.stderr and "wandb" in r.stderr


def test_profile_steps_write_a_trace_that_inspect_lists(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    r = _train(workdir, tfds_dir, "--config.train.steps=6", "--config.train.profile_steps=(2, 3)")
    assert r.returncode == 0, r.stderr[-2000:]
    traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    r = run_cli("inspect", workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.relpath(traces[0], workdir) in r.stdout
    r = _train(str(tmp_path / "bad"), tfds_dir, "--config.train.profile_steps=(5, 2)")
    assert r.returncode == 2 and "train.profile_steps" in r.stderr
