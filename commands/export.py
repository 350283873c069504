"""`run.py export --workdir DIR --format hf --out PATH`: the run's newest checkpoint as a
folder that another framework loads (`hf`: Hugging Face `from_pretrained`).

Reads the parameters (checksums verified) and the saved config only: no model is built
and no device is needed beyond reading the arrays. The exported weights are the trained
`params` (not an EMA copy); LoRA adapters are merged into their layers' kernels
(W + (alpha / rank) A B, models/layers.py `merge_lora`), so the folder holds the plain
architecture that `transformers` loads with its usual classes.
"""
from __future__ import annotations

import sys

from errors import ConfigError, lookup

# format -> what writes it (a table, so a new format is one line and one function)
FORMATS: dict[str, str] = {"hf": "Hugging Face save_pretrained folder (config.json + model.safetensors)"}


def _export_hf(workdir: str, out: str) -> list[str]:
    from commands.workdir import saved_config
    from models.layers import merge_lora
    from train import hf, init_from
    config = saved_config(workdir)
    fields = config.model.to_dict()
    params = init_from.load_params(workdir)
    if fields.get("lora_rank"):  # absent from the configs of runs older than LoRA
        params = merge_lora(params, fields["lora_alpha"])
    return hf.write_folder(out, params, fields.pop("name"), fields)


def cmd_export(args: list[str], flags) -> int:
    """Writes the newest checkpoint of --workdir in --format to --out."""
    workdir = flags.workdir or (args[0] if args else None)
    if not workdir:
        raise ConfigError("--workdir is required: run.py export --workdir DIR --format hf --out PATH.")
    if not flags.out:
        raise ConfigError("--out is required: the folder to write, e.g. --out DIR/hf.")
    lookup(FORMATS, "export format", flags.format)
    written = _export_hf(workdir, flags.out)
    print(f"strata: exported {workdir} as {flags.format} to {flags.out} "
          f"({', '.join(written)})", file=sys.stderr)
    return 0
