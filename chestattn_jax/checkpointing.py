"""Orbax checkpoints in ``WORKDIR/checkpoints`` (a local path or ``gs://``).

Each checkpoint step holds three items:

- ``state``: the train state's arrays (step, params, batch_stats, opt_state);
- ``data``: the grain iterator state (one file per process), so a resumed run
  sees the same batches, augmented the same way;
- ``meta``: JSON bookkeeping: the best step and validation loss, the
  early-stopping count, and the training losses of steps not yet logged.

The most recent ``checkpoints_to_keep`` steps are kept, and so is the step with
the lowest validation loss (Orbax ``BestN`` on the ``val_loss`` metric).

Orbax writes a step into a temporary directory and renames it when complete, so
a run killed while saving leaves only a ``*.orbax-checkpoint-tmp-*`` directory,
which is ignored and removed when the next run starts. A step that was complete
but is damaged afterwards (missing or truncated files) fails to restore:
:meth:`Checkpointer.restore_latest` then resumes from the newest step before it
that restores, and moves the damaged one to ``WORKDIR/checkpoints_unreadable``
with a warning.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import serialization

from chestattn_jax.train_state import TrainState

UNREADABLE_DIR = "checkpoints_unreadable"


def workdir_path(workdir) -> epath.Path:
    """``workdir`` as an ``epath.Path``: absolute if local, unchanged if a URL (``gs://``)."""
    text = os.fspath(workdir)
    return epath.Path(text if "://" in text else os.path.abspath(text))


class Checkpointer:
    def __init__(self, workdir, checkpoints_to_keep: int = 2, read_only: bool = False):
        self.workdir = workdir_path(workdir)
        self.directory = self.workdir / "checkpoints"
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=checkpoints_to_keep),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_val_loss,
                    reverse=True,  # sorted high to low, so the last (kept) one is the lowest
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                # Without best_fn Orbax does not write the metrics to disk, and a restarted
                # run would no longer know (and keep) the best step.
                best_fn=_val_loss,
                best_mode="min",
                create=not read_only,
                read_only=read_only,
                # Saves left unfinished by a killed run: never listed as steps; removed here.
                cleanup_tmp_directories=not read_only,
                enable_async_checkpointing=False,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(
        self, step: int, state: TrainState, data_iterator, meta: dict, val_loss: float | None = None
    ) -> None:
        items = {
            "state": ocp.args.StandardSave(serialization.to_state_dict(state)),
            "meta": ocp.args.JsonSave(meta),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None if val_loss is None else {"val_loss": float(val_loss)}
        self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, state: TrainState, data_iterator=None):
        """Restores ``step`` into ``state``'s structure and shardings; returns ``(state, meta)``.

        With ``data_iterator`` given, its position is restored in place as well.
        """
        items = {
            "state": ocp.args.StandardRestore(serialization.to_state_dict(state)),
            "meta": ocp.args.JsonRestore(),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return serialization.from_state_dict(state, restored["state"]), dict(restored["meta"])

    def restore_latest(self, state: TrainState, data_iterator=None):
        """The newest step that restores: ``(step, state, meta)``, or ``None`` if there is none.

        Steps newer than it that fail to restore (damaged) are moved out of
        ``checkpoints/`` into ``checkpoints_unreadable/``, with a warning naming
        each. If no step restores, nothing is moved and the newest one's error is
        raised: that is a config that no longer fits the checkpoints (another model
        or optimizer), not damage. With several processes they agree on each
        verdict, so all of them resume from the same step.
        """
        failed = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(step, state, data_iterator)
                error = None
            except Exception as e:  # any failure to read; judged below
                error = e
            if _all_processes_ok(error is None):
                for bad_step, bad_error in failed:
                    moved = self._set_aside(bad_step)
                    logging.warning(
                        "Checkpoint %s is unreadable (%s); moved it to %s and resumed from "
                        "step %d.",
                        self.step_dir(bad_step),
                        _describe(bad_error),
                        moved,
                        step,
                    )
                return (step, *restored)
            failed.append((step, error))
        if failed:
            step, error = failed[0]
            raise RuntimeError(
                f"No checkpoint in {self.directory} restores into this config's train "
                f"state (the newest, step {step}: {_describe(error)}). A config that "
                "changed the model or optimizer needs a new --workdir."
            ) from error
        return None

    def _set_aside(self, step: int) -> epath.Path:
        target_root = self.workdir / UNREADABLE_DIR
        target = target_root / str(step)
        n = 1
        while target.exists():
            target, n = target_root / f"{step}-{n}", n + 1
        if jax.process_index() == 0:
            target_root.mkdir(parents=True, exist_ok=True)
            try:
                self.step_dir(step).rename(target)
            except OSError:  # object stores cannot always rename a directory
                self.step_dir(step).rmtree()
                target = None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
        self._manager.reload()
        return target or "nowhere (deleted)"

    def read_meta(self, step: int) -> dict:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        self._manager.close()


def _describe(error: Exception | None) -> str:
    if error is None:
        return "it failed on another process"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _val_loss(metrics: dict) -> float:
    return metrics["val_loss"]


def _all_processes_ok(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))
