"""Command line entry point.

  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=/tmp/chestattn
  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=/tmp/chestattn \
      --mode=evaluate
  python -m chestattn_jax.main --config=configs/nih.py:image --workdir=W \
      --config.train.batch_size=64
  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=W \
      --mode=predict --images=a.png,b.jpg,c.dcm

Training resumes from the latest checkpoint in ``--workdir`` when run again.
"""

import logging as pylogging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from chestattn_jax import distributed, evaluate, predict, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and evaluation output.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "predict"],
    "train (then test), evaluate only, or predict on --images.",
)
flags.DEFINE_list(
    "images", [], "--mode=predict: PNG, JPEG or DICOM files to score (comma-separated)."
)
flags.DEFINE_string(
    "output_dir", None, "--mode=predict: where predictions.json and overlays go (WORKDIR/predict)."
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-process run on a Cloud TPU pod, SLURM or Open MPI: jax.distributed.initialize() "
    "detects the processes. Elsewhere give --num_processes and its companions instead.",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process runs: HOST:PORT of process 0, the same for all (or $JAX_COORDINATOR_ADDRESS).",
)
flags.DEFINE_integer(
    "num_processes", None, "Multi-process runs: how many processes (one per host) run this."
)
flags.DEFINE_integer(
    "process_id", None, "Multi-process runs: this process's index, 0 .. --num_processes - 1."
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with an argument: configs/nih.py:class.",
    lock_config=True,
)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
    """Keeps Orbax's and grain's per-operation INFO chatter out of the progress log."""

    def filter(self, record):
        noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain"))
        return record.levelno >= pylogging.WARNING or not noisy


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    distributed.initialize(
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        autodetect=FLAGS.distributed,
    )
    logging.get_absl_handler().addFilter(_QuietLibraries())
    logging.info(
        "JAX %s: process %d of %d, %d local / %d global devices (%s)",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )
    config = FLAGS.config
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == "evaluate":
        train.prepare_workdir(FLAGS.workdir)
        try:
            evaluate.evaluate(config, FLAGS.workdir)
        except (ValueError, FileNotFoundError) as e:  # wrong checkpoint, no checkpoint
            sys.exit(f"FATAL: {e}")
    else:
        if not FLAGS.images:
            raise app.UsageError("--mode=predict needs --images=a.png,b.jpg,c.dcm")
        try:
            result = predict.predict(config, FLAGS.workdir, FLAGS.images, FLAGS.output_dir)
        except (ValueError, FileNotFoundError) as e:  # wrong checkpoint, no checkpoint
            sys.exit(f"FATAL: {e}")
        if result["errors"]:
            failed = ", ".join(e["path"] for e in result["errors"])
            sys.exit(
                f"FATAL: {len(result['errors'])} of {len(FLAGS.images)} images failed: {failed}"
            )


def parse_flags(argv):
    """absl flag parsing, with a plain message for a ``--config.*`` key that does not exist."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for an override path that is not in the config.
        detail = str(e.args[0] if e.args else e).replace("\\'", "'").strip("\"' ")
        key = detail.split("\n")[0].strip("'")
        culprits = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and key in a]
        sys.exit(
            f"FATAL: {' '.join(culprits) or 'a --config override'}: the config has no field "
            f"{key!r}. {' '.join(detail.splitlines()[1:])}".rstrip()
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
