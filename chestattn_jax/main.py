"""Command line entry point.

  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=/tmp/chestattn
  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=/tmp/chestattn \
      --mode=evaluate
  python -m chestattn_jax.main --config=configs/nih.py:image --workdir=W \
      --config.train.batch_size=64
  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=W \
      --mode=predict --images=a.png,b.jpg,c.dcm

Training resumes from the latest checkpoint in ``--workdir`` when run again.

Flags and the whole config are checked before anything is written or compiled
(:func:`chestattn_jax.config.validate`); a mistake ends the run with one ``FATAL``
message naming each flag or config field at fault and a non-zero exit status
(``--verbosity=1`` logs the traceback as well).
"""

import difflib
import gc
import logging as pylogging
import os
import re
import signal
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from chestattn_jax import distributed, evaluation, predict_images, train, validation
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.checkpointing import CheckpointError
from chestattn_jax.workdir import WorkdirBusy

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and evaluation output.")
flags.DEFINE_enum(
    "mode",
    "train",
    list(validation.MODES),
    "train (then test), evaluate only, or predict on --images.",
)


class _RepeatableListFlag(flags.MultiFlag):
    """A comma-separated list that may also be given several times, the lists joined:
    ``--images=a.png,b.png --images=c.png``. Each value is read as one CSV row, so a
    file name with a comma is quoted: ``--images='"x,1.png",b.png'``."""

    def _parse(self, arguments):
        if isinstance(arguments, str):
            return self.parser.parse(arguments)
        return [x for a in arguments for x in (self.parser.parse(a) if isinstance(a, str) else [a])]


flags.DEFINE_flag(
    _RepeatableListFlag(
        flags.ListParser(),
        flags.CsvListSerializer(","),
        "images",
        [],
        "--mode=predict: PNG, JPEG or DICOM files to score, comma-separated (a name with a "
        "comma in double quotes: --images='\"x,1.png\",b.png'), or --images given once per "
        "file or list",
    )
)
# Flags that may be given more than once (their values are joined); any other flag given
# twice is refused: absl keeps the last value, ml_collections joins a tuple field's values.
REPEATABLE_FLAGS = ("images",)
flags.DEFINE_string(
    "output_dir", None, "--mode=predict: where predictions.json and overlays go (WORKDIR/predict)."
)
flags.DEFINE_string(
    "thresholds",
    None,
    "--mode=predict: a thresholds.json (as --mode=evaluate writes it) to call positives at; "
    "by default WORKDIR/eval/thresholds.json where it is of the restored checkpoint.",
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
    """Keeps Orbax's, grain's and gcsfs's per-operation INFO chatter (gcsfs logs a line
    for every file it opens in a bucket) out of the progress log."""

    def filter(self, record):
        noisy = any(
            f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain", "gcsfs")
        )
        return record.levelno >= pylogging.WARNING or not noisy


def main(argv):
    """Runs ``--mode`` once the flags and the config are checked. Raises one of
    :data:`USER_ERRORS` for what the user must fix (a :class:`validation.ConfigError`
    lists every problem of the flags and the config); :func:`run` turns it into one
    ``FATAL`` message."""
    config = FLAGS.config
    found = flag_problems(argv)
    if found:  # reported before a distributed runtime starts, with the config's problems
        # but for batch sizes that do not divide over the devices (not known yet).
        raise validation.ConfigError(found + validation.problems(config, FLAGS.mode, num_devices=1))
    distributed.initialize(
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        autodetect=FLAGS.distributed,
    )
    validation.validate(config, FLAGS.mode)  # batch sizes over jax.device_count() too
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
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == "evaluate":
        evaluation.evaluate(config, FLAGS.workdir)
    else:
        result = predict_images.predict(
            config, FLAGS.workdir, FLAGS.images, FLAGS.output_dir, FLAGS.thresholds
        )
        if result["errors"]:
            failed = ", ".join(e["path"] for e in result["errors"])
            total = len(result["predictions"]) + len(result["errors"])
            sys.exit(f"FATAL: {len(result['errors'])} of {total} images failed: {failed}")


def flag_problems(argv) -> list[str]:
    """What is wrong with the command line's own flags (not the config) for ``--mode``."""
    found = []
    mode = FLAGS.mode
    if len(argv) > 1:
        found.append(
            f"unexpected arguments {' '.join(argv[1:])!r}: flags take the form --name=value "
            "(--images takes one comma-separated list)."
        )
    if mode == "predict":
        if not FLAGS.images:
            found.append("--mode=predict needs --images=a.png,b.jpg,c.dcm (comma-separated).")
        elif not all(p.strip() for p in FLAGS.images):
            found.append(f"--images={','.join(FLAGS.images)}: an empty file name (a stray comma?).")
        if FLAGS.distributed or (FLAGS.num_processes or 1) > 1:
            found.append(
                "--mode=predict runs in one process; start it without --distributed and "
                "--num_processes."
            )
        out = FLAGS.output_dir
        if out is not None and (not out or (os.path.exists(out) and not os.path.isdir(out))):
            found.append(f"--output_dir={out!r} is not a directory, nor a name for a new one.")
        if FLAGS.thresholds is not None and not FLAGS.thresholds:
            found.append("--thresholds is empty; give a thresholds.json, or leave it out.")
    else:
        for name in ("images", "output_dir", "thresholds"):
            if FLAGS[name].present:
                found.append(f"--{name} is read by --mode=predict only; this is --mode={mode}.")
    workdir = FLAGS.workdir
    if not workdir:
        found.append("--workdir is empty; give the directory of the run.")
    elif "://" not in workdir:  # gs:// and other URLs: checked when they are read
        problem = workdir_lib.not_a_directory(workdir)
        if problem:
            found.append(problem)
        elif mode != "train" and not os.path.isdir(workdir):
            found.append(
                f"--workdir {workdir!r} does not exist; --mode={mode} reads the checkpoints "
                "that --mode=train wrote there."
            )
    return found


# What a run raises for what its user must fix or decide: bad flags, config, data, workdir
# or checkpoint (ValueError, OSError), no readable checkpoint, a workdir another training
# run holds, a loss that diverged. Anything else is a bug, and keeps its traceback.
USER_ERRORS = (ValueError, OSError, CheckpointError, WorkdirBusy, FloatingPointError)


def run(argv):
    """:func:`main` as the command line runs it: a user's mistake ends in one FATAL
    message and a non-zero exit status, not a traceback."""
    try:
        main(argv)
    except USER_ERRORS as e:
        logging.debug("The error below was raised here:", exc_info=True)
        sys.exit(f"FATAL: {e}")
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (starting up, compiling, the evaluation after
        # training, --mode=evaluate or predict). Inside it, train.Interrupted has saved a
        # checkpoint and exits with 130 itself.
        logging.debug("Interrupted here:", exc_info=True)
    else:
        return
    sys.stderr.write(
        "Interrupted (SIGINT) outside the training loop: no trained step was lost; "
        "run the same command again to go on.\n"
    )
    # Not sys.exit: a Ctrl-C inside an XLA compilation leaves its threads running, and
    # tearing the interpreter down under them is a segmentation fault. Every finally
    # block has run; the traceback is gone, so collecting frees grain's queues and
    # shared memory (else multiprocessing reports them leaked).
    gc.collect()
    pylogging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGINT)


def parse_flags(argv):
    """absl's flag parsing and its one-line ``FATAL Flags parsing error`` for a bad flag,
    with a message naming the flag for a ``--config.*`` field that does not exist."""
    try:
        rest = FLAGS(argv)
        repeated = repeated_flags(argv)
        if repeated:
            _flags_error(
                ", ".join(f"--{name} is given {n} times" for name, n in repeated)
                + ": give each flag once (absl would keep the last value, and a tuple "
                "config field would join the values)."
            )
        config = FLAGS.config
        if not isinstance(config, config_dict.ConfigDict):
            getattr(config, "keys", None)  # one that failed to load raises OSError when read
            _flags_error(
                f"flag --config={_config_spec(argv)}: get_config() returned "
                f"{type(config).__name__}, not an ml_collections.ConfigDict."
            )
        return rest
    except (AttributeError, KeyError) as e:
        # ml_collections raises these for an override path that is not in the config.
        found = override_problems(argv)
        if found:
            sys.exit(f"FATAL: {validation.ConfigError(found)}")
        spec = _config_spec(argv)
        _flags_error(f"flag --config={spec}: {_describe(e, spec)}")
    except flags.Error as e:
        _flags_error(_without_traceback(str(e)))
    except OSError as e:  # the config file could not be loaded (raised when it is read)
        _flags_error(f"flag --config={_config_spec(argv)}: {_last_line(str(e))}")
    except Exception as e:  # the config file's own error: SyntaxError, NameError, ...
        spec = _config_spec(argv)
        _flags_error(f"flag --config={spec}: {_describe(e, spec)}")


def repeated_flags(argv) -> list[tuple[str, int]]:
    """``(name, times)`` of each flag given more than once on the parsed command line
    ``argv``, except :data:`REPEATABLE_FLAGS`."""
    found = []
    for name, fl in FLAGS._flags().items():  # absl has no public list of flags
        if name != fl.name or name in REPEATABLE_FLAGS or fl.present < 2:
            continue
        # A tuple field counts its values, not its occurrences: count those in argv.
        times = _occurrences(argv, name) if isinstance(fl, flags.MultiFlag) else fl.present
        if times > 1:
            found.append((name, times))
    return found


def _occurrences(argv, name: str) -> int:
    """How many times ``--name`` (``--name=V``, ``--name V``, ``--noname``) is in ``argv``,
    up to a ``--`` that ends the flags."""
    pattern = re.compile(rf"^--?(no)?{re.escape(name)}(=|$)")
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    return sum(bool(pattern.match(a)) for a in args)


def _describe(e: BaseException, spec: str | None) -> str:
    """``Type: message (at FILE, line N)``: the last line of the config file ``spec`` in the
    traceback of ``e``, or else its innermost frame."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, SyntaxError):  # names its line itself
        return text
    frames = traceback.extract_tb(e.__traceback__)
    path = os.path.abspath(spec.split(":", 1)[0]) if spec else None
    own = [f for f in frames if os.path.abspath(f.filename) == path]
    if own or frames:
        frame = (own or frames)[-1]
        text += f" (at {frame.filename}, line {frame.lineno})"
    return text


def _flags_error(message: str):
    """Exits as ``absl.app.parse_flags_with_usage`` does."""
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _without_traceback(message: str) -> str:
    """A config file's exception as its last line: ml_collections puts the traceback of
    ``get_config`` into the flag error."""
    if "Traceback (most recent call last)" not in message:
        return message
    head = message.split("Error whilst parsing config file:")[0].rstrip()
    return f"{head} {_last_line(message)}"


def _config_spec(argv) -> str | None:
    """The value of the last ``--config`` in ``argv``."""
    spec = None
    for i, arg in enumerate(argv):
        m = re.match(r"^--?config(=(.*))?$", arg)
        if m:
            spec = m[2] if m[1] else (argv[i + 1] if i + 1 < len(argv) else None)
    return spec


def override_problems(argv) -> list[str]:
    """Each ``--config.A.B=V`` of ``argv`` whose path is not in the config, named with the
    group it is missing from and the closest field name."""
    spec = _config_spec(argv)
    if not spec:
        return []
    try:
        config = FLAGS["config"].parser.parse(spec)
    except Exception:  # the config file itself is broken
        return []
    found = []
    for arg in argv[1:]:
        m = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
        if m:
            problem = _path_problem(config, m[1])
            if problem:
                found.append(f"{arg}: {problem}")
    return found


def _path_problem(config, path: str) -> str | None:
    node, walked = config, "config"
    for part in path.split("."):
        if not isinstance(node, config_dict.ConfigDict | dict):
            return (
                f"{walked} is a value ({node!r}), not a group of fields; it has no field {part!r}."
            )
        if part not in node:
            fields = list(node.keys())
            close = difflib.get_close_matches(part, fields, n=1)
            if walked == "config.data.uncertainty_per_class":
                hint = (
                    " Set the whole dict: "
                    "--config.data.uncertainty_per_class=\"{'Edema': 'ones'}\"."
                )
            elif close:
                hint = f" Did you mean {close[0]!r}?"
            else:
                hint = f" Its fields are {', '.join(fields)}." if fields else ""
            return f"the config has no field {part!r} in {walked}.{hint}"
        node, walked = node[part], f"{walked}.{part}"
    return None


if __name__ == "__main__":
    app.run(run, flags_parser=parse_flags)
