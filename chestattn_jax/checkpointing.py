"""Orbax checkpoints in ``WORKDIR/checkpoints``.

Each checkpoint step holds three items:

- ``state``: the train state's arrays (step, params, batch_stats, opt_state);
- ``data``: the grain iterator state, so a resumed run sees the same batches;
- ``meta``: JSON bookkeeping (best step and validation loss, early-stopping count).

The most recent ``checkpoints_to_keep`` steps are kept, and so is the step with
the lowest validation loss (Orbax ``BestN`` on the ``val_loss`` metric).
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp
from flax import serialization

from chestattn_jax.train_state import TrainState


class Checkpointer:
    def __init__(self, workdir: str, checkpoints_to_keep: int = 2, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=checkpoints_to_keep),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics["val_loss"],
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
                create=not read_only,
                read_only=read_only,
                enable_async_checkpointing=False,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

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

    def read_meta(self, step: int) -> dict:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        self._manager.close()
