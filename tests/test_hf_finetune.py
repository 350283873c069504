"""The Hugging Face round trip as a user runs it: a transformers GPT-2 saved with
save_pretrained, fine-tuned with `run.py train --config configs/gpt2_finetune.py:hf=...`,
exported with `run.py export`, loaded back with from_pretrained: its loss on Python
source is lower than the original's, and `train` never imported torch."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import transformers

from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def _loss(model: transformers.GPT2LMHeadModel, text: bytes) -> float:
    ids = torch.tensor(np.frombuffer(text, np.uint8).astype(np.int64)).reshape(4, -1)  # byte = token id
    with torch.no_grad():
        return float(model(ids, labels=ids).loss)


def test_finetune_imported_gpt2_then_export_lowers_its_loss(tmp_path, tfds_dir):
    src, workdir, out = str(tmp_path / "src"), str(tmp_path / "run"), str(tmp_path / "hf")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=256, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    original = transformers.GPT2LMHeadModel(config).eval()
    original.save_pretrained(src)

    r = run_cli("train", "--config", f"configs/gpt2_finetune.py:hf={src},runlocal", "--workdir", workdir,
                "--config.train.progress=False", f"--config.data.data_dir={tfds_dir}",
                env={"PYTHONPROFILEIMPORTTIME": "1"})  # every import listed on stderr
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"parameters from hf:{src} (all matched)" in r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    # (tensorboardX's attempt at `import torch` is blocked by train/writers.py: it shows
    # as a bare "torch" line with no submodules)
    assert "safetensors" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers", "wandb") and m != "torch"}

    r = run_cli("export", "--workdir", workdir, "--format", "hf", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    tuned = transformers.GPT2LMHeadModel.from_pretrained(out).eval()

    with open(os.__file__, "rb") as f:  # the standard library: the text the run trained on
        text = f.read()[:4 * 64]
    assert _loss(tuned, text) < _loss(original, text) - 0.05


def test_export_errors_are_one_line(tmp_path):
    r = run_cli("export", "--workdir", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "export format" in r.stderr and "hf" in r.stderr
    r = run_cli("export", "--workdir", str(tmp_path), "--format", "hf")
    assert r.returncode == 2 and "--out is required" in r.stderr
