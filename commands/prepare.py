"""`run.py prepare NAME [--data_dir DIR] [--manual_dir DIR]`: any TFDS dataset (or an
embedded one) into ArrayRecord files; `--manual_dir` holds the files of datasets that
need a manual download (imagenet2012: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar)."""
from __future__ import annotations

from errors import ConfigError


def cmd_prepare(args: list[str], flags) -> int:
    """Prepares dataset `args[0]` under `--data_dir` and prints its splits."""
    from data import sources
    if len(args) != 1:
        raise ConfigError("usage: python run.py prepare NAME [--data_dir DIR] [--manual_dir DIR]")
    builder = sources.prepare(args[0], flags.data_dir, manual_dir=flags.manual_dir)
    print(f"strata: {args[0]} ready in {builder.data_dir} "
          f"({', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())})")
    return 0
