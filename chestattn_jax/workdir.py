"""The workdir: the names of what a run keeps there, writes that name the file
when they fail, and the lock that keeps two training runs apart.

  WORKDIR/
    config.json        the config of the last training run (written once its checks pass)
    dataset.json       the fingerprint of the data set it trained on
    train.lock         held by the training run that uses the workdir (local disks only)
    checkpoints/       Orbax steps (checkpointing.py)
    metrics.jsonl      training and validation scalars; tensorboard/ the same as events
    eval/              the evaluation of the test split at the best checkpoint
                       (chestattn_jax/evaluation); eval_<split>_<checkpoint>[_<settings>]/
                       for other evaluations, eval_<dataset>_<split>_<checkpoint>/ on
                       another data set
"""

from __future__ import annotations

import datetime
import os
import socket
import sys

import jax
import numpy as np
from absl import logging
from etils import epath

from chestattn_jax.files import (  # noqa: F401  (re-exported: callers use workdir.write_json)
    is_local,
    read_json,
    require_gcs,
    write_bytes,
    write_json,
    write_text,
)

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
LOCK_FILE = "train.lock"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
EVAL_DIR = "eval"
PREDICT_DIR = "predict"
# In an evaluation folder: the predictions record that compare reads, and the maps of
# the figure images.
PREDICTIONS_FILE = "predictions.npz"
# The thresholds (and recalibration) an evaluation chose on the validation split, which
# prediction calls positives with (the operating_points evaluator writes it).
THRESHOLDS_FILE = "thresholds.json"
ATTENTION_EXAMPLES_FILE = "attention_examples.npz"
# What the workdir itself keeps: an evaluation folder (config.eval.output_name) must not
# take one of these names.
WORKDIR_NAMES = (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATASET_FILE,
    LOCK_FILE,
    METRICS_FILE,
    "tensorboard",
    PREDICT_DIR,
)


def writes_files() -> bool:
    """Whether this process writes the workdir's files: process 0 of several (the one
    rule for every writer: config and data fingerprints, checkpoint moves, metrics,
    evaluation files and the lock). The others compute the same and write nothing."""
    return jax.process_index() == 0


def workdir_path(workdir) -> epath.Path:
    """``workdir`` as an ``epath.Path``: absolute if local, unchanged if a URL (``gs://``).
    Raises :class:`chestattn_jax.files.CloudStorageUnavailable` for ``gs://`` without the
    ``gcs`` extra installed."""
    text = os.fspath(workdir)
    require_gcs(text, "--workdir")
    return epath.Path(text if "://" in text else os.path.abspath(text))


def not_a_directory(workdir) -> str | None:
    """Why ``workdir`` cannot be a run's folder, if it cannot: it exists as a file."""
    path = workdir_path(workdir)
    if path.exists() and not path.is_dir():
        return f"--workdir {os.fspath(workdir)!r} exists and is not a directory."
    return None


class WorkdirBusy(RuntimeError):
    """Another training run holds the workdir's lock."""


class TrainLock:
    """An exclusive lock of ``WORKDIR/train.lock`` for the life of a training run.

    ``fcntl.flock`` on a local disk: the kernel releases it when the process ends,
    however it ends (``kill -9`` included), so a lock is never left stale. The file
    names the holder (process, host, start time, command line) for the message the
    next run shows. With several processes, process 0 takes it and all agree.
    On ``gs://`` there is no lock (object stores have no advisory locks): one
    warning says so, and keeping runs apart is then up to the user.
    """

    def __init__(self, workdir):
        self.path = workdir_path(workdir) / LOCK_FILE
        self._fd = None

    def __enter__(self):
        taken = True
        holder = ""
        if writes_files():
            if is_local(self.path):
                taken, holder = self._take()
            else:
                logging.warning(
                    "No lock on a %s workdir: make sure no other training run uses %s.",
                    os.fspath(self.path).split("://")[0] + "://",
                    self.path.parent,
                )
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            taken = bool(np.all(multihost_utils.process_allgather(np.asarray(taken))))
        if not taken:
            raise WorkdirBusy(
                f"Another training run is using --workdir {self.path.parent} "
                f"({holder or f'it holds {self.path}'}). Wait for it to end or stop it, "
                "or train in another --workdir."
            )
        return self

    def _take(self) -> tuple[bool, str]:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            return False, holder
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = (
            f"process {os.getpid()} on host {socket.gethostname()}, started {started}: "
            + " ".join(sys.argv)
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode() + b"\n", 0)
        self._fd = fd
        return True, ""

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays, naming the last holder
            self._fd = None
        return False
