"""Strata's one entry point.

    python run.py                                  # train the embedded default -> runs/default
    python run.py train   --config configs/NAME.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
    python run.py eval    --workdir DIR            # the task's evaluation on the latest checkpoint
    python run.py sample  --workdir DIR [--config.sample.KEY=VALUE ...]  # text or a PNG grid
    python run.py sweep   --config configs/NAME.py --workdir DIR [--parallel N] [--seeds K]
    python run.py sweep   ... --launcher slurm [--slurm_time 4:00:00 ...]  # one SLURM job array
    python run.py sweep   --status DIR           # each trial: queued, running, done or failed
    python run.py report  DIR                      # Markdown/CSV table + plots of runs
    python run.py prepare NAME [--data_dir DIR] [--manual_dir DIR]  # any TFDS dataset -> ArrayRecord
    python run.py inspect DIR                      # checkpoints: step, metrics, size, params
    python run.py export  --workdir DIR --format hf --out PATH  # a folder transformers loads
    python run.py attack  --workdir DIR            # robust accuracy per budget + figures -> DIR/attack/
    python run.py explain --workdir DIR            # attribution maps -> DIR/explain/

Mistakes in the command line or config end in one line on stderr and exit code 2;
set STRATA_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TFDS imports TensorFlow to prepare data

# CPU-only speed defaults (XLA flags, host allocator); they must precede JAX's start and do
# nothing on accelerators or with STRATA_CPU_DEFAULTS=0. See train/xla_defaults.py.
from train import compile_cache, xla_defaults  # noqa: E402

xla_defaults.apply_cpu_defaults()
xla_defaults.tune_host_allocator()
compile_cache.enable()  # compiled steps persist across runs (STRATA_COMPILE_CACHE=0: off)

from absl import app, flags, logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import errors  # noqa: E402

DEFAULT_CONFIG = "configs/digits_resnet.py"

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, configs/NAME.py[:ARG].", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard files.")
flags.DEFINE_string("data_dir", None, "TFDS data dir for `prepare` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "`prepare`: the folder holding a dataset's manually downloaded files "
                    "(imagenet2012: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
# sweep
flags.DEFINE_integer("parallel", 1, "sweep: trials run at once.")
flags.DEFINE_integer("seeds", 1, "sweep: seeds per trial.")
flags.DEFINE_bool("print_commands", False, "sweep: print one `run.py train` command per trial instead.")
flags.DEFINE_enum("launcher", "local", ["local", "slurm", "tpu-vm", "gke"],
                  "sweep: run the trials here (local), submit them as one SLURM job array (slurm), or write "
                  "Cloud TPU VM commands (tpu-vm) or GKE JobSet manifests (gke) into --workdir.")
flags.DEFINE_string("cloud_workdir", None, "sweep --launcher tpu-vm/gke: gs://BUCKET/PATH; trial workdirs live under it.")
flags.DEFINE_string("tpu_name", None, "sweep --launcher tpu-vm: the TPU VM (pod slice) name.")
flags.DEFINE_string("tpu_zone", None, "sweep --launcher tpu-vm: its zone, e.g. us-central2-b.")
flags.DEFINE_string("tpu_project", None, "sweep --launcher tpu-vm: its GCP project (default: gcloud's).")
flags.DEFINE_string("gke_image", None, "sweep --launcher gke: the container image holding this repository.")
flags.DEFINE_string("gke_tpu_type", None, "sweep --launcher gke: TPU accelerator, e.g. tpu-v5-lite-podslice.")
flags.DEFINE_string("gke_tpu_topology", None, "sweep --launcher gke: TPU topology, e.g. 2x4.")
flags.DEFINE_integer("gke_chips_per_host", 4, "sweep --launcher gke: TPU chips per host (node).")
flags.DEFINE_string("status", None, "sweep: print each trial of the sweep in DIR as queued, running, done or failed.")
flags.DEFINE_string("slurm_partition", None, "sweep --launcher slurm: the partition (default: the cluster's).")
flags.DEFINE_string("slurm_time", None, "sweep --launcher slurm: time limit per trial, e.g. 4:00:00.")
flags.DEFINE_integer("slurm_gpus_per_task", None, "sweep --launcher slurm: GPUs per trial.")
flags.DEFINE_integer("slurm_cpus_per_task", None, "sweep --launcher slurm: CPUs per trial.")
flags.DEFINE_integer("slurm_max_parallel", None, "sweep --launcher slurm: trials running at once (the array's %M).")
# export
flags.DEFINE_string("format", "hf", "export: the output format (hf = Hugging Face save_pretrained folder).")
flags.DEFINE_string("out", None, "export: the folder to write.")
# resume safety
flags.DEFINE_bool("allow_config_change", False, "Resume even if the config differs from the saved one.")


class UsageError(Exception):
    """A mistake on the command line; printed as one line, exit code 2."""


def fail(message: str) -> None:
    print(f"strata: error: {message}", file=sys.stderr, flush=True)
    sys.exit(errors.EXIT_USER)


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with flag and config mistakes turned into one line and exit code 2."""
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = [argv[0], f"--config={os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG)}"] + argv[1:]
    _check_config_path(argv)
    try:
        rest = FLAGS(argv)
        FLAGS.config  # config_flags loads the file and applies overrides lazily
        return rest
    except flags.Error as e:
        fail(_flag_message(str(e), argv))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, SyntaxError) as e:
        fail(_flag_message(f"{type(e).__name__}: {e}", argv))
    return []


def _check_config_path(argv: list[str]) -> None:
    """A missing config file is reported before config_flags tries (and fails loudly)."""
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--config=") else (
            argv[i + 1] if a == "--config" and i + 1 < len(argv) else None)
        if value is not None and not os.path.isfile(value.split(":", 1)[0]):
            from commands.flag_errors import available_configs
            fail(f"config file {value.split(':', 1)[0]!r} not found. "
                 f"Available: {', '.join(available_configs())}.")


def _flag_message(text: str, argv: list[str]) -> str:
    from commands.flag_errors import explain_flag_error
    return explain_flag_error(text, argv)


def main(argv: list[str]) -> None:
    args = argv[1:]
    command = args[0] if args else "train"
    import commands
    if command not in commands.COMMANDS:
        fail(errors.unknown_name_message("command", command, list(commands.COMMANDS)))
    try:
        code = commands.dispatch(command, args[1:], FLAGS)
    except errors.StrataError as e:  # a user mistake; anything else is a bug (traceback, exit 1)
        if os.environ.get("STRATA_DEBUG"):
            raise
        fail(errors.one_line(e))
        return
    sys.exit(code or 0)


if __name__ == "__main__":
    absl_logging.set_verbosity(absl_logging.ERROR)
    app.run(main, flags_parser=parse_flags)
