"""Orbax checkpoints in ``WORKDIR/checkpoints`` (a local path or ``gs://``).

Each checkpoint step holds three items:

- ``state``: the train state's arrays (step, params, batch_stats, opt_state);
- ``data``: the grain iterator state (one file per process), so a resumed run
  sees the same batches, augmented the same way;
- ``meta``: JSON bookkeeping: the best step and its validation score, the
  early-stopping count, and the training losses of steps not yet logged.

The most recent ``checkpoints_to_keep`` steps are kept, and so is the step with the
best validation score (Orbax ``BestN`` on the ``score`` metric, lower is better: the
validation loss, its classification part, or minus the mean AUC, as
``config.train.early_stopping_metric`` says).

Orbax writes a step into a temporary directory and renames it when complete, so
a run killed while saving (or stopped by a full disk) leaves only a
``*.orbax-checkpoint-tmp-*`` directory, which is ignored and removed when the
next run starts. A step that was complete but is damaged afterwards (missing or
truncated files) fails to restore. Training (:meth:`Checkpointer.restore_latest`)
and evaluation (:meth:`Checkpointer.restore_preferred`) follow one rule: they
use the preferred step that restores on every process, and warn about each
unreadable one they pass over; training also moves those to
``WORKDIR/checkpoints_unreadable``. A step whose stored tree does not fit the
config's train state is a config change, not damage: it stops with
:class:`CheckpointMismatch`. A step that cannot be written or that no step
restores stops with :class:`CheckpointError`, whose message names the step, its
folder and the cause.

Every process reads a step on its own (no cross-process barrier inside a read),
and the processes then agree on the verdict, so one process that cannot read a
file never leaves the others waiting at a barrier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as pylogging
import os
import re
import sys
import threading

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import serialization

from chestattn_jax.config_fields import not_this_version
from chestattn_jax.train_state import TrainState
from chestattn_jax.workdir import CHECKPOINT_DIR, workdir_path, writes_files

UNREADABLE_DIR = "checkpoints_unreadable"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or no checkpoint could be read."""


class CheckpointMismatch(ValueError):
    """The stored checkpoint does not fit the train state the config describes."""


class UnreadableFile(ValueError):
    """A file of a checkpoint step that cannot be read; the message names it and the cause
    (:func:`describe` shows it, not the cause alone)."""


class _DataHandler(grain.checkpoint.CheckpointHandler):
    """grain's handler of the ``data`` item, naming this process's file when it cannot be
    read: grain lets a damaged file's ``JSONDecodeError`` through with no name."""

    def restore(self, directory, item=None, args=None):
        try:
            return super().restore(directory, item, args)
        except ValueError as e:
            name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
            if name in str(e):
                raise
            raise UnreadableFile(
                f"{epath.Path(directory) / name} cannot be read ({type(e).__name__}: {e})"
            ) from e


# Orbax pairs a handler with its argument types (both a save and a restore type, though
# only restores go through this one).
@ocp.args.register_with_handler(_DataHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class _DataRestore(grain.checkpoint.CheckpointRestore):
    """``grain.checkpoint.CheckpointRestore``, read by :class:`_DataHandler`."""


class Checkpointer:
    def __init__(self, workdir, checkpoints_to_keep: int = 2, read_only: bool = False):
        self.workdir = workdir_path(workdir)
        self.directory = self.workdir / CHECKPOINT_DIR
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=checkpoints_to_keep),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_score,
                    reverse=True,  # sorted high to low, so the last (kept) one is the lowest
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        # Read-only is what evaluation asks for: Orbax's warnings about it are noise there.
        with _without_read_only_warnings() if read_only else contextlib.nullcontext():
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    preservation_policy=policy,
                    # Without best_fn Orbax does not write the metrics to disk, and a
                    # restarted run would no longer know (and keep) the best step.
                    best_fn=_score,
                    best_mode="min",
                    create=not read_only,
                    read_only=read_only,
                    # Saves left unfinished by a killed run: never listed as steps; removed here.
                    cleanup_tmp_directories=not read_only,
                    enable_async_checkpointing=False,
                ),
            )
        if not read_only:
            # Orbax removes the unfinished saves in a background thread that only a save
            # waits for; wait here, so that none is left by a run that ends before saving.
            wait = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
            if wait is not None:
                wait()
        # Reads go through the item handlers directly: Orbax's Checkpointer.restore ends at
        # a barrier of all processes, which one process failing to read would never reach.
        self._reader = ocp.CompositeCheckpointHandler(
            state=ocp.StandardCheckpointHandler(),
            meta=ocp.JsonCheckpointHandler(),
            data=_DataHandler(),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(
        self,
        step: int,
        state: TrainState,
        data_iterator,
        meta: dict,
        val_loss: float | None = None,
        score: float | None = None,
    ) -> None:
        """Writes step ``step``, with its validation loss and ``score`` (what picks the best
        step, lower is better; default: the loss) when it has them; raises
        :class:`CheckpointError` naming the cause if it cannot."""
        items = {
            "state": ocp.args.StandardSave(serialization.to_state_dict(state)),
            "meta": ocp.args.JsonSave(meta),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None
        if val_loss is not None:
            metrics = {"val_loss": float(val_loss)}
            metrics["score"] = float(val_loss if score is None else score)
        try:
            with _echoes_dropped(self.step_dir(step)):
                self._manager.save(
                    step, args=ocp.args.Composite(**items), metrics=metrics, force=True
                )
                self._manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(
                f"Could not write checkpoint step {step} in {self.directory}: {describe(e)}. "
                "The checkpoints before it are intact; fix the cause (free disk space, "
                "permissions) and run the same command again to resume."
            ) from e

    def restore(self, step: int, state: TrainState, data_iterator=None):
        """Restores ``step`` into ``state``'s structure and shardings; returns ``(state, meta)``.

        With ``data_iterator`` given, its position is restored in place as well. Reads
        on this process alone, without waiting for the others.
        """
        items = {
            "state": ocp.args.StandardRestore(serialization.to_state_dict(state)),
            "meta": ocp.args.JsonRestore(),
        }
        if data_iterator is not None:
            items["data"] = _DataRestore(data_iterator)
        with _echoes_dropped(self.step_dir(step)):
            restored = self._reader.restore(self.step_dir(step), args=ocp.args.Composite(**items))
        return serialization.from_state_dict(state, restored["state"]), dict(restored["meta"])

    def read_meta(self, step: int) -> dict:
        restored = self._reader.restore(
            self.step_dir(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"])

    def stored_differences(self, step: int, state) -> list[str] | None:
        """How the stored train state of ``step`` differs from ``state``'s tree: missing,
        extra and differently shaped arrays (``[]`` when it fits); ``None`` when the
        stored tree cannot be read (a damaged step). Reads metadata only, no arrays."""
        try:
            stored = ocp.StandardCheckpointHandler().metadata(self.step_dir(step) / "state")
            stored = getattr(stored, "tree", stored)
        except Exception:
            return None
        if not stored:
            return None
        return tree_differences(stored, serialization.to_state_dict(state))

    def restore_latest(self, state: TrainState, data_iterator=None):
        """The newest step that restores: ``(step, state, meta)``, or ``None`` if there is none.

        Steps newer than it that fail to restore (damaged) are moved out of
        ``checkpoints/`` into ``checkpoints_unreadable/``, with a warning naming
        each. A step that does not fit ``state`` raises :class:`CheckpointMismatch`
        (the config changed the model or optimizer), and when no step restores
        :class:`CheckpointError` names each step and its cause; in both cases
        nothing is moved.
        """
        steps = list(reversed(self.all_steps()))
        if not steps:
            return None
        step, restored, failed = self._first_readable(steps, state, data_iterator)
        if step is None:
            raise self._none_readable(failed, "Training cannot resume")
        for bad_step, bad_error in failed:
            moved = self._set_aside(bad_step)
            logging.warning(
                "Checkpoint %s is unreadable (%s); moved it to %s and resumed from step %d.",
                self.step_dir(bad_step),
                describe(bad_error),
                moved,
                step,
            )
        return (step, *restored)

    def restore_preferred(self, state: TrainState, which: str = "best"):
        """Step ``which`` (``best``: best validation score; ``latest``) restored into
        ``state``: ``(step, state, meta)``. Nothing on disk changes.

        An unreadable step is passed over with a warning for the next in order (best:
        the next best score; latest: the next newest), as training does.
        Raises ``FileNotFoundError`` without checkpoints, :class:`CheckpointMismatch`
        when the checkpoint does not fit ``state``, and :class:`CheckpointError` when
        no step restores.
        """
        steps = self.preference_order(which)
        if not steps:
            raise FileNotFoundError(
                f"No checkpoint in {self.directory}: train one first with --mode=train "
                "on this --workdir."
            )
        step, restored, failed = self._first_readable(steps, state, None)
        if step is None:
            raise self._none_readable(failed, "Nothing can be evaluated")
        for bad_step, bad_error in failed:
            logging.warning(
                "Checkpoint %s (%s) is unreadable (%s); using step %d instead.",
                self.step_dir(bad_step),
                "the best" if which == "best" and bad_step == steps[0] else which,
                describe(bad_error),
                step,
            )
        return (step, *restored)

    def preference_order(self, which: str) -> list[int]:
        """Steps in the order evaluation tries them: ``best`` by validation score (steps
        saved without one, e.g. at a preemption, after those, newest first);
        ``latest`` newest first."""
        if which not in ("best", "latest"):
            raise ValueError(
                f"checkpoint={which!r} (config.eval.checkpoint): expected 'best' or 'latest'."
            )
        newest_first = list(reversed(self.all_steps()))
        if which == "latest":
            return newest_first
        scored = []
        for step in newest_first:
            metrics = self._manager.metrics(step)
            if metrics:  # else saved without a validation (e.g. at a preemption)
                where = self.step_dir(step) / "metrics" / "metrics"
                scored.append((float(_score(metrics, where)), step))
        ranked = [s for _, s in sorted(scored)]
        return ranked + [s for s in newest_first if s not in ranked]

    def _first_readable(self, steps, state, data_iterator):
        """``(step, (state, meta), failed)`` for the first of ``steps`` that restores on
        every process, or ``(None, None, failed)``; ``failed`` lists ``(step, error)``
        of those passed over. Every process takes the same path."""
        failed = []
        for step in steps:
            differences = self.stored_differences(step, state)
            verdict = _agree("mismatch" if differences else "fits")
            if verdict == "mismatch":
                raise CheckpointMismatch(
                    f"Checkpoint {self.step_dir(step)} does not fit the train state of this "
                    "config (" + "; ".join(differences or ["on another process"]) + "). "
                    "A config that changed the model or optimizer needs its own --workdir."
                )
            try:
                restored, error = self.restore(step, state, data_iterator), None
            except Exception as e:  # any failure to read is damage here; judged together
                restored, error = None, e
            if _agree("ok" if error is None else "damaged") == "ok":
                return step, restored, failed
            failed.append((step, error))
        return None, None, failed

    def _none_readable(self, failed, consequence: str) -> CheckpointError:
        causes = "; ".join(
            f"step {step} ({self.step_dir(step)}): {describe(error)}" for step, error in failed
        )
        return CheckpointError(
            f"No checkpoint in {self.directory} can be read. {consequence}: {causes}. "
            f"The files are left as they are; move the damaged steps away (or use a new "
            "--workdir) to start again from scratch."
        )

    def _set_aside(self, step: int) -> epath.Path:
        target_root = self.workdir / UNREADABLE_DIR
        target = target_root / str(step)
        n = 1
        while target.exists():
            target, n = target_root / f"{step}-{n}", n + 1
        if writes_files():
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

    def close(self) -> None:
        self._manager.close()


def tree_differences(stored, wanted) -> list[str]:
    """Missing, extra and differently shaped leaves of ``stored`` against ``wanted``
    (nested dicts of arrays or array metadata), at most four of each kind."""
    flat_stored = _shapes(stored)
    flat_wanted = _shapes(wanted)
    problems = []
    missing = sorted(set(flat_wanted) - set(flat_stored))
    extra = sorted(set(flat_stored) - set(flat_wanted))
    shapes = [
        f"{p} stored {flat_stored[p]}, config wants {flat_wanted[p]}"
        for p in sorted(set(flat_wanted) & set(flat_stored))
        if flat_stored[p] != flat_wanted[p]
    ]
    if missing:
        problems.append(f"arrays the config's model has but the checkpoint lacks: {missing[:4]}")
    if extra:
        problems.append(f"arrays in the checkpoint the config's model lacks: {extra[:4]}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:4]))
    return problems


def _shapes(tree) -> dict[str, tuple]:
    return {
        jax.tree_util.keystr(p): tuple(getattr(v, "shape", np.shape(v)))
        for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def describe(error: BaseException | None) -> str:
    """One line for ``error``: the innermost cause of a chain (where Orbax and
    TensorStore name the file), with its type."""
    if error is None:
        return "it failed on another process"
    chain = _chain(error)
    # An UnreadableFile names the file and its cause already: the chain ends there.
    cut = next((i for i, e in enumerate(chain) if isinstance(e, UnreadableFile)), None)
    chain = chain if cut is None else chain[: cut + 1]
    innermost = next((e for e in reversed(chain) if str(e).strip()), error)
    text = " ".join(str(innermost).split())
    text = text.split(" See full TensorStore details")[0]
    # TensorStore may add where in its C++ the error passed: not for users, and long
    # enough to push the OS's reason out of the 500 characters kept below.
    text = re.sub(r"\s*\[source locations='[^']*'\]", "", text)
    if len(text) > 500:  # the file at fault comes first, the OS's reason last: keep both
        text = text[:250] + " ... " + text[-250:]
    return f"{type(innermost).__name__}: {text}"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during, outermost first."""
    chain, e = [], error
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def _score(metrics: dict, where="A checkpoint's metrics (STEP/metrics/metrics)") -> float:
    """What ranks a step: its validation score, lower is better (``metrics`` read from
    ``where``, which a ``ValueError`` names if it has none)."""
    if "score" not in metrics:
        raise ValueError(not_this_version(where, ["score"]))
    return metrics["score"]


def _agree(verdict: str) -> str:
    """The verdict of all processes on one step: ``mismatch`` if any process found one,
    else ``damaged`` if any could not read it, else this process's verdict."""
    if jax.process_count() == 1:
        return verdict
    from jax.experimental import multihost_utils

    codes = {"ok": 0, "fits": 0, "damaged": 1, "mismatch": 2}
    worst = int(np.max(multihost_utils.process_allgather(np.asarray(codes[verdict]))))
    return verdict if worst == 0 else ("damaged", "mismatch")[worst - 1]


class _Echoes(pylogging.Filter):
    """What a failed Orbax read or write prints besides the error it raises.

    Orbax's background threads log that error with its traceback (``_SignalingThread.run()
    raised an exception``) and hand it to the caller, which reports it in one line
    (:class:`CheckpointError`, or a warning when another step is used). Orbax then closes
    its asyncio loop with TensorStore reads and writes still in flight: each that ends
    raises ``RuntimeError('Event loop is closed')`` through ``sys.unraisablehook``, as does
    each of its coroutines collected unfinished, and ``asyncio`` logs each task whose error
    nobody retrieved when it is collected, often at exit. Hundreds of tracebacks bury the
    cause.

    While an operation runs (:func:`_echoes_dropped`) these are held. If it raises, the
    held ones are dropped, and so are later ones (threads still finishing, tasks collected
    at exit) of the same error or of an error naming the failed step's folder. Any other
    record, and every held one of an operation that succeeds, is printed as usual.
    """

    def __init__(self):
        super().__init__()
        self.lock = threading.RLock()  # a collected task logs from inside any code
        self.active = 0
        self.held: list = []
        self.reported: set[str] = set()
        self.failed_dirs: list[re.Pattern] = []
        self.previous_hook = None

    def install(self) -> None:
        if self.previous_hook is None:
            self.previous_hook = sys.unraisablehook
            sys.unraisablehook = self.unraisable_hook
            for name in ("absl", "asyncio"):  # Orbax logs through absl
                pylogging.getLogger(name).addFilter(self)

    def is_echo(self, error: BaseException) -> bool:
        text = str(error)
        with self.lock:
            if text == "Event loop is closed":
                return bool(self.failed_dirs)
            return text in self.reported or any(d.search(text) for d in self.failed_dirs)

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if error is None or record.levelno < pylogging.ERROR:
            return True
        if record.name != "asyncio" and f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        with self.lock:
            if self.is_echo(error):
                return False
            if self.active:
                self.held.append(record)
                return False
        return True

    def unraisable_hook(self, unraisable):
        error = unraisable.exc_value
        if error is not None:
            with self.lock:
                if self.is_echo(error):
                    return
                if self.active:
                    self.held.append(unraisable)
                    return
        self.previous_hook(unraisable)

    def ended(self, where: str, error: BaseException | None) -> None:
        with self.lock:
            self.active -= 1
            if error is not None:
                self.reported.update(str(e) for e in _chain(error) if str(e).strip())
                self.failed_dirs.append(re.compile(re.escape(where) + r"(?=[/.\"']|$)"))
            if self.active:
                return
            held, self.held = self.held, []
        for item in held:
            if isinstance(item, pylogging.LogRecord):
                if not self.is_echo(item.exc_info[1]):
                    pylogging.getLogger(item.name).handle(item)
            elif not self.is_echo(item.exc_value):
                self.previous_hook(item)


_ECHOES = _Echoes()


@contextlib.contextmanager
def _echoes_dropped(where):
    """Runs an Orbax read or write of the step folder ``where`` under :class:`_Echoes`."""
    with _ECHOES.lock:
        _ECHOES.install()
        _ECHOES.active += 1
    error = None
    try:
        yield
    except BaseException as e:
        error = e
        raise
    finally:
        _ECHOES.ended(os.fspath(where), error)


class _ReadOnlyNotice(pylogging.Filter):
    def filter(self, record):
        text = record.getMessage()
        return not (
            text.startswith("Given directory is read only")
            or text.startswith("CheckpointManagerOptions.read_only=True")
        )


@contextlib.contextmanager
def _without_read_only_warnings():
    notice = _ReadOnlyNotice()
    logger = pylogging.getLogger("absl")
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
