"""Turns config_flags' multi-line errors into one line that names the problem and the fix."""
from __future__ import annotations

import glob
import os
import re

from train.paths import REPO


def _override_keys(argv: list[str]) -> list[str]:
    return [a[len("--config."):].split("=")[0] for a in argv if a.startswith("--config.")]


def available_configs() -> list[str]:
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                  if not os.path.basename(p).startswith(("_", "common")))


def explain_flag_error(text: str, argv: list[str]) -> str:
    """One line for an error raised while parsing flags or loading the config file."""
    text = text.replace("\\n", "\n").replace("\\'", "'")
    did_you_mean = re.search(r"'([^'\n]+)'\s*\n?Did you mean \"([^\"]+)\" instead of \"([^\"]+)\"", text)
    if did_you_mean:
        bad, good = did_you_mean.group(3), did_you_mean.group(2)
        for key in _override_keys(argv):
            parts = key.split(".")
            if bad in parts:
                fixed = ".".join(good if p == bad else p for p in parts)
                return f"unknown config key {key!r}. Did you mean {fixed!r}?"
        return f"unknown config key {bad!r}. Did you mean {good!r}?"
    missing = re.search(r"(KeyError|AttributeError): .*?'([^'\\]+)'", text)
    if missing and ("KeyError" in text or "AttributeError" in text) and "Did you mean" not in text:
        key = next((k for k in _override_keys(argv) if missing.group(2) in k.split(".")), missing.group(2))
        return f"unknown config key {key!r}; run with --config.KEY=VALUE for keys that exist in the config file."
    bad_value = re.search(r"flag --config\.([\w.]+)=(.*?): (.*)", text)
    if bad_value:
        key, value, why = bad_value.groups()
        kind = re.search(r"for (int|float)\(\)", why)
        wanted = f"expects {'an' if kind and kind.group(1) == 'int' else 'a'} {kind.group(1)}" if kind else why.strip()
        return f"wrong value for config.{key}: {value!r} ({wanted})."
    if "No such file or directory" in text or "Unable to load" in text:
        path = re.search(r"--config[= ]([^\s:]+)", " ".join(argv))
        name = path.group(1) if path else "the config file"
        return (f"config file {name!r} not found. Available: {', '.join(available_configs())}.")
    if "Missing value for flag" in text:
        return text.strip().splitlines()[-1].strip() + " (write --flag=VALUE)."
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    last = lines[-1] if lines else text
    if "Error whilst parsing config file" in text:
        return f"in the config file: {last}"
    return last
