"""Strata models: pure Linen modules, found by name through one checked table.

Every model takes `train: bool` as a keyword and names the logical axes of its
parameters (`embed`, `mlp`, `heads`, `vocab`, `conv_in`, `conv_out`, ...); the
config maps those names to mesh axes (see `train/sharding.py`).
"""
from __future__ import annotations

import importlib

import flax.linen as nn

from errors import ConfigError, UnknownNameError, lookup

# Model keys every config has (configs/common.py): LoRA's. The families with LoRA fields
# take them; for the others they must be off, and are dropped. `lora_train` is read by the
# optimizer (train/optimizers.py), never by a model.
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_targets")
LORA_TRAIN_KEY = "lora_train"

# name -> "module:Class". Resolved lazily so that importing one family never
# pulls in the others.
MODELS: dict[str, str] = {
    "resnet": "models.resnet:ResNet",
    "vit": "models.vit:ViT",
    "gpt": "models.gpt:GPT",
    "rnn": "models.rnn:RNN",
    "unet": "models.unet:UNet",
    "transformer": "models.transformer:Transformer",
    "inception_v3": "models.inception:InceptionV3",  # FID features (train/evaluators/fid.py)
}


def get_model_class(name: str) -> type[nn.Module]:
    """Returns the Linen class registered under `name`."""
    module_name, class_name = lookup(MODELS, "model", name).split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(name: str, **kwargs) -> nn.Module:
    """`Model(**config.model)` with the name taken out and unknown fields reported."""
    cls = get_model_class(name)
    # A config read back from config.json has lists where the file had tuples; Linen
    # modules must stay hashable (they are static arguments of jitted functions).
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
    kwargs.pop(LORA_TRAIN_KEY, None)
    if "lora_rank" not in fields:
        if kwargs.get("lora_rank", 0):
            with_lora = sorted(n for n in MODELS if "lora_rank" in get_model_class(n).__dataclass_fields__)
            raise ConfigError(f"model {name!r} has no LoRA adapters (model.lora_rank="
                              f"{kwargs['lora_rank']}); LoRA works with {', '.join(with_lora)}.")
        kwargs = {k: v for k, v in kwargs.items() if k not in LORA_KEYS}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise UnknownNameError(
            f"model {name!r} has no field(s) {', '.join(unknown)}. "
            f"Valid: {', '.join(sorted(fields))}.")
    return cls(**kwargs)


def lora_rank(model: nn.Module) -> int:
    """The model's LoRA rank; 0 for families without LoRA adapters."""
    return getattr(model, "lora_rank", 0)
