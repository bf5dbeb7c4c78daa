"""The training loop with validation, checkpoints and exact resume.

A run restarted on its workdir (a local path or ``gs://``), after a crash, a
``SIGKILL`` or a preemption, continues from the newest readable checkpoint and
ends, on the same hardware and software, with the parameters and metric logs of
an uninterrupted run, bit for bit. What makes that so:

- the checkpoint holds everything the loop carries from step to step: the train
  state, the grain iterator's position (the batch order and the augmentation,
  which grain seeds per example index, follow from it), the early-stopping
  record and the training losses of steps not yet logged (``checkpointing.py``);
- the train step draws no random numbers;
- ``metrics.jsonl`` loses the rows an interrupted run logged after its last
  checkpoint (the resumed run logs them again), and TensorBoard hides those
  events (``metric_writers.py``).

A preemption notice (``SIGTERM``) makes the loop finish its step, write a
checkpoint and exit with status 143 (:class:`Preempted`); with several processes
they agree on the step through JAX's preemption service. Ctrl-C (``SIGINT``, to
the whole process group: grain's workers ignore it) does the same in a
one-process run, with status 130 (:class:`Interrupted`); a second Ctrl-C ends
the process at once, the checkpoint unwritten. A non-finite loss or parameter
stops training with :class:`FloatingPointError`, naming the settings to change,
before anything non-finite is checkpointed.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from chestattn_jax import config_fields as fields
from chestattn_jax import evaluation, init_from
from chestattn_jax import sharding as shd
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.data.augment import Augment
from chestattn_jax.data.input_pipeline import create_source, dataset_fingerprint, train_dataset
from chestattn_jax.losses import class_weights
from chestattn_jax.metric_writers import MetricWriter, Progress
from chestattn_jax.models import create_model
from chestattn_jax.models.convert import maybe_load_pretrained
from chestattn_jax.steps import make_eval_step, make_train_step
from chestattn_jax.train_state import (
    OPTIMIZERS,
    SCHEDULES,
    TrainState,
    abstract_train_state,
    create_learning_rate,
    create_optimizer,
    create_train_state,
)
from chestattn_jax.workdir import TrainLock, workdir_path

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # and for a Ctrl-C
# Test-only: "STEP:SIGNAL[:PROCESS]" makes the process (or only process PROCESS) send
# itself SIGNAL (e.g. SIGKILL, SIGTERM) once step STEP is done, logged and checkpointed;
# SIGSTOP holds it there for a test to send a signal of its own (tests/test_interrupt.py).
SIGNAL_AT_STEP_ENV = "CHESTATTN_TEST_SIGNAL_AT_STEP"


class Preempted(SystemExit):
    """A preemption notice was handled: a checkpoint of ``step`` is saved.

    A ``SystemExit``: uncaught, the program exits with status 143, like a process
    killed by ``SIGTERM``, so that schedulers retry it; the retry resumes.
    """

    exit_code = PREEMPTED_EXIT_CODE
    reason = "Preempted (SIGTERM)"

    def __init__(self, step: int, directory):
        super().__init__(self.exit_code)
        self.step = step
        self.message = (
            f"{self.reason}: saved the checkpoint of step {step} in {directory}; "
            "run the same command again to resume."
        )

    def __str__(self):
        return self.message


class Interrupted(Preempted):
    """Ctrl-C (``SIGINT``) was handled as a preemption is: a checkpoint of ``step`` is
    saved, and the program exits with status 130, as a shell reports a Ctrl-C."""

    exit_code = INTERRUPTED_EXIT_CODE
    reason = "Interrupted (SIGINT)"


def check_workdir(workdir) -> epath.Path:
    """``workdir`` as an ``epath.Path``, after checking it is a directory or can be one."""
    problem = workdir_lib.not_a_directory(workdir)
    if problem:
        raise NotADirectoryError(problem)
    return workdir_path(workdir)


def prepare_workdir(workdir) -> epath.Path:
    """Creates ``workdir`` (local or ``gs://``); returns it as an ``epath.Path``."""
    path = check_workdir(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


# What stops training and picks the best checkpoint (config.train.early_stopping_metric).
EARLY_STOPPING_METRICS = ("loss", "bce", "mean_auc")


def check_config(p, mode: str) -> None:
    """The rules of ``config.train``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    p.int("train.batch_size", 1, "at least 1")
    steps = p.int("train.num_steps", 1 if mode == "train" else 0, "at least 1 to train")
    optimizer = p.choice("train.optimizer", OPTIMIZERS)
    p.positive("train.learning_rate")
    p.non_negative("train.weight_decay")
    if optimizer is not None and optimizer != "adamw":
        p.ignored("train.weight_decay", f"is read by the adamw optimizer only, not {optimizer!r}")
    momentum = p.real("train.momentum")
    if momentum is not None and not 0 <= momentum < 1:
        p.add("train.momentum", "must be at least 0 and below 1.")
    if optimizer is not None and optimizer != "sgd":
        p.ignored("train.momentum", f"is read by the sgd optimizer only, not {optimizer!r}")
    p.choice("train.schedule", SCHEDULES)
    warmup = p.int("train.warmup_steps", 0, "at least 0")
    if mode == "train" and steps is not None and warmup and warmup >= steps:
        p.add(
            "train.warmup_steps",
            f"must be below config.train.num_steps={steps}, or the learning rate never "
            "reaches config.train.learning_rate (0: no warm-up).",
        )
    p.int("train.log_every_steps", 1, "at least 1")
    p.int("train.eval_every_steps", 1, "at least 1")
    p.choice("train.early_stopping_metric", EARLY_STOPPING_METRICS)
    p.int("train.patience", 0, "at least 0 (0: never stop early)")
    p.int("train.checkpoints_to_keep", 1, "at least 1")


def validation_score(val: dict, metric: str) -> float:
    """The score of a validation (:func:`evaluation.split_metrics`) that ranks checkpoints
    and stops training, lower is better: the loss, its classification part, or minus the
    mean AUC (infinite while no class has both labels)."""
    if metric == "mean_auc":
        return -val["mean_auc"] if val["mean_auc"] is not None else float("inf")
    return float(val[metric])


def train_and_evaluate(config, workdir) -> dict:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints), then tests.

    Returns the test metrics, also written to ``WORKDIR/eval/metrics.json``.
    """
    train(config, workdir)
    # The settings are this run's training settings now (config.json): an evaluation
    # under the ones it was resumed from is out of date, and is replaced.
    return evaluation.evaluate(config, os.fspath(workdir), replace_other_settings=True)


def train(config, workdir) -> TrainState:
    """Trains ``config`` in ``workdir`` to ``config.train.num_steps`` or an early stop.

    Resumes from the newest checkpoint in ``WORKDIR/checkpoints`` that restores
    (damaged newer ones are set aside). Returns the final train state. Raises
    :class:`Preempted` after saving a checkpoint on ``SIGTERM``, and
    ``FloatingPointError`` on a non-finite loss.
    """
    workdir = check_workdir(workdir)
    t = config.train
    local_bs = shd.local_batch_size(t.batch_size, "config.train.batch_size")
    shd.local_batch_size(config.eval.batch_size, "config.eval.batch_size")
    train_source = create_source(config, "train")
    val_source = create_source(config, "validation")
    fingerprint = dataset_fingerprint(config)
    # The model to fine-tune from, read and checked before anything is written; a run
    # that resumes from its own checkpoints does not read it.
    source = None
    if config.model.init_from and not _has_checkpoints(workdir):
        source = init_from.load_source(config)
    prepare_workdir(workdir)
    with TrainLock(workdir):
        checkpointer = Checkpointer(workdir, t.checkpoints_to_keep)
        try:
            return _train(
                config,
                workdir,
                checkpointer,
                local_bs,
                train_source,
                val_source,
                fingerprint,
                source,
            )
        finally:
            checkpointer.close()


def _has_checkpoints(workdir: epath.Path) -> bool:
    """Whether ``workdir`` holds a checkpoint step (a run that will resume)."""
    directory = workdir / workdir_lib.CHECKPOINT_DIR
    return directory.is_dir() and any(c.name.isdigit() for c in directory.iterdir())


def _train(
    config, workdir, checkpointer, local_bs, train_source, val_source, fingerprint, source=None
) -> TrainState:
    """:func:`train`, once the inputs are checked and the workdir is locked; ``source``:
    the model of ``config.model.init_from`` (:func:`init_from.load_source`), if read."""
    t = config.train
    if checkpointer.all_steps():
        # Before anything is compiled or written: the model must be the one of the
        # checkpoints, and the data the one they were trained on.
        changes = evaluation.trained_setting_changes(
            workdir,
            config,
            fingerprint,
            advice="A config that changes the model needs its own --workdir.",
        )
        evaluation.check_setting_changes(changes, config, "Resuming training")
    mesh = shd.make_mesh()
    model = create_model(config)
    tx = create_optimizer(t)
    counts = train_source.positive_counts()
    labelled = train_source.labelled_counts()  # inverse_frequency's N, per class
    weights = class_weights(counts, labelled, config.loss.class_weights, list(config.data.classes))
    logging.info("Data set: %s", json.dumps(fingerprint, sort_keys=True))
    logging.info(
        "Training positives per class: %s",
        dict(zip(config.data.classes, counts.tolist(), strict=True)),
    )
    logging.info("Class weights (%s): %s", config.loss.class_weights, np.round(weights, 4))

    def diverged(what: str, step: int) -> FloatingPointError:
        return FloatingPointError(
            f"{what} by step {step}; {_last_good(checkpointer)} "
            + divergence_advice(config, step, weights, checkpointer.latest_step())
        )

    init = functools.partial(
        create_train_state,
        model,
        tx,
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )
    # Shapes and placement only: a resumed run restores into it, without compiling init.
    abstract_state = abstract_train_state(init, shd.replicated(mesh))
    logging.info("Parameters: %d", sum(x.size for x in jax.tree.leaves(abstract_state.params)))
    augment = Augment.from_config(config.data.augment) if config.data.augment.enabled else None

    data_iter = iter(
        train_dataset(
            train_source,
            batch_size=local_bs,
            seed=config.seed,
            num_workers=config.data.num_workers,
            augment=augment,
            read_threads=config.data.read_threads,
            prefetch_batches=config.data.prefetch_batches,
        )
    )
    meta = {
        "best_step": None,
        "best_val_loss": None,
        "best_score": None,  # validation_score of the best step
        "early_stopping_metric": t.early_stopping_metric,
        "bad_evals": 0,
        "stopped_early": False,
    }
    pending = []  # per-step train metrics since the last log: fetched together, no per-step sync
    restored = checkpointer.restore_latest(abstract_state, data_iter)
    if restored is None:
        # A fresh run: the backbone from config.model.pretrained (torchvision), or the
        # trained model of config.model.init_from, if set.
        state = maybe_load_pretrained(init(), config.model.pretrained)
        if config.model.init_from:
            state, _ = init_from.apply(config, state, source)
    else:
        if config.model.init_from:
            logging.info(
                "Resuming: config.model.init_from=%r is not read (the checkpoint is).",
                config.model.init_from,
            )
        step, state, meta = restored
        meta = _same_stopping_metric(
            meta, t.early_stopping_metric, checkpointer.step_dir(step) / "meta" / "metadata"
        )
        pending = [
            {k: np.float32(v) for k, v in m.items()} for m in meta.pop("unlogged_train_metrics", [])
        ]
        logging.info("Resumed from %s at step %d.", checkpointer.step_dir(step), step)

    p_train_step = make_train_step(config, mesh, weights)
    p_eval_step = make_eval_step(config, mesh, weights)
    data_sharding = shd.batch_sharded(mesh)
    step = int(state.step)
    writer = MetricWriter(workdir, resume_step=step)
    progress = Progress(t.num_steps, t.batch_size, step)
    hooks = step_hooks()

    def save(val_loss=None, score=None):
        unlogged = jax.device_get(pending)
        _check_finite(step, state, unlogged, diverged)
        saved_meta = {
            **meta,
            "unlogged_train_metrics": [{k: float(v) for k, v in m.items()} for m in unlogged],
        }
        checkpointer.save(step, state, data_iter, saved_meta, val_loss=val_loss, score=score)

    if workdir_lib.writes_files():
        # Only now that the checkpoints fit: what evaluation checks its config against.
        saved = workdir_lib.read_json(workdir / workdir_lib.CONFIG_FILE)
        if restored is not None and saved is not None:
            changed = fields.describe(
                fields.differences(saved, json.loads(config.to_json_best_effort()))
            )
            if changed:
                logging.warning("Resumed with other settings than before: %s", ", ".join(changed))
        workdir_lib.write_text(
            workdir / workdir_lib.CONFIG_FILE, config.to_json_best_effort(indent=2) + "\n"
        )
        workdir_lib.write_json(workdir / workdir_lib.DATASET_FILE, fingerprint)

    batch = None
    try:
        with _PreemptionNotice() as preemption:
            while step < t.num_steps and not meta["stopped_early"]:
                waiting = time.perf_counter()
                batch = next(data_iter)
                progress.waited(time.perf_counter() - waiting)
                state, metrics = p_train_step(state, shd.to_global(batch, data_sharding))
                step += 1
                pending.append(metrics)
                saved = False
                if step % t.log_every_steps == 0 or step == t.num_steps:
                    summary = {
                        k: float(np.mean([m[k] for m in jax.device_get(pending)]))
                        for k in pending[0]
                    }
                    pending = []
                    if not np.isfinite(summary["loss"]):
                        raise diverged(f"Training loss became {summary['loss']}", step)
                    summary.update(progress.report(step, summary))
                    writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
                if step % t.eval_every_steps == 0 or step == t.num_steps:
                    val = evaluation.split_metrics(p_eval_step, state, val_source, config, mesh)
                    if not np.isfinite(val["loss"]):
                        raise diverged(f"Validation loss became {val['loss']}", step)
                    score = validation_score(val, t.early_stopping_metric)
                    improved = meta["best_score"] is None or score < meta["best_score"]
                    if improved:
                        meta.update(
                            best_step=step, best_val_loss=val["loss"], best_score=score, bad_evals=0
                        )
                    else:
                        meta["bad_evals"] += 1
                    meta["stopped_early"] = bool(t.patience) and meta["bad_evals"] >= t.patience
                    logging.info(
                        "step %d | validation loss %.4f (bce %.4f) | mean AUC %.4f%s",
                        step,
                        val["loss"],
                        val["bce"],
                        val["mean_auc"] or float("nan"),
                        " | early stop" if meta["stopped_early"] else "",
                    )
                    writer.write_scalars(
                        step,
                        {
                            "val/loss": val["loss"],
                            "val/bce": val["bce"],
                            "val/mean_auc": val["mean_auc"] or float("nan"),
                            **{f"val/auc/{c}": v for c, v in val["auc"].items() if v is not None},
                        },
                    )
                    save(val_loss=val["loss"], score=score)
                    saved = True
                for hook in hooks:
                    hook(step)
                if preemption.reached(step):
                    if not saved:
                        save()
                    stop = Interrupted if preemption.signum == signal.SIGINT else Preempted
                    stopped = stop(step, checkpointer.step_dir(step))
                    logging.warning("%s", stopped)
                    raise stopped
    finally:
        # With grain workers the batch's arrays live in shared memory, which only their
        # release unlinks; an exception's traceback would keep them until the interpreter
        # is torn down, and Python then reports them as leaked.
        del batch
        writer.close()
        if hasattr(data_iter, "close"):
            data_iter.close()
    return state


def _same_stopping_metric(meta: dict, metric: str, where) -> dict:
    """``meta`` of a resumed run (read from ``where``), checked to rank its checkpoints by
    ``metric``. Another metric than the run's is refused: its checkpoints' scores would mix
    two scales. A ``meta`` without the fields this version writes is refused, naming them."""
    missing = [k for k in ("best_score", "early_stopping_metric") if k not in meta]
    if missing:
        raise ValueError(fields.not_this_version(where, missing))
    was = meta["early_stopping_metric"]
    if was != metric:
        raise ValueError(
            f"config.train.early_stopping_metric={metric!r}, but this workdir's run ranks its "
            f"checkpoints by {was!r}. Resume with --config.train.early_stopping_metric={was}, "
            "or train with another metric in a new --workdir."
        )
    return meta


def _last_good(checkpointer: Checkpointer) -> str:
    latest = checkpointer.latest_step()
    if latest is None:
        return "no checkpoint was written before it."
    return f"the last good checkpoint is {checkpointer.step_dir(latest)} (step {latest})."


def divergence_advice(config, step: int, weights, last_good: int | None) -> str:
    """What a user needs after a non-finite loss by ``step``: the settings that make a run
    diverge, with their values (the learning rate, its schedule and its value at
    ``step``; the class weights ``weights``, ``(k,)``, and the largest; the model's
    compute dtype when it is 16-bit), the flags to try, and that the same command with
    one of them resumes from ``last_good`` (``None``: no checkpoint, it starts over)."""
    t = config.train
    lr_now = float(create_learning_rate(t)(step))
    if t.schedule == "cosine":
        schedule = f"cosine decay over {t.num_steps} steps"
    else:
        schedule = "constant"
    schedule += f" after {t.warmup_steps} warm-up steps" if t.warmup_steps else ", no warm-up"
    settings = [
        f"config.train.learning_rate={t.learning_rate:g} ({t.optimizer}, {schedule}; "
        f"{lr_now:.3g} at step {step})"
    ]
    scheme = config.loss.class_weights
    weights = np.asarray(weights)
    top = int(np.argmax(weights))
    if scheme == "none":
        settings.append(f"config.loss.class_weights={scheme!r} (all 1)")
    else:
        settings.append(
            f"config.loss.class_weights={scheme!r} (largest {weights[top]:.3g}, "
            f"{list(config.data.classes)[top]})"
        )
    tries = [f"a 10x lower rate (--config.train.learning_rate={t.learning_rate / 10:g})"]
    if t.warmup_steps:
        warm, warmup = "a longer warm-up", 2 * t.warmup_steps
    else:
        warm, warmup = "a warm-up", max(1, min(1000, t.num_steps // 20))
    warmup = min(warmup, t.num_steps - 1)  # config.validate: warm-up below num_steps
    if warmup > t.warmup_steps:
        tries.append(f"{warm} (--config.train.warmup_steps={warmup})")
    if scheme != "none" and weights[top] > 1:
        tries.append("unweighted classes (--config.loss.class_weights=none)")
    dtype = config.model.dtype
    if dtype in ("float16", "bfloat16"):
        why = "largest value 65504" if dtype == "float16" else "about 3 significant digits"
        settings.append(f"config.model.dtype={dtype} ({why})")
        tries.append("full precision (--config.model.dtype=float32)")
    again = (
        f"the same command with one of them resumes from step {last_good}"
        if last_good is not None
        else "run the same command with one of them to start over"
    )
    return f"Settings: {'; '.join(settings)}. Try {', or '.join(tries)}: {again}."


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _check_finite(step: int, state: TrainState, unlogged: list, diverged):
    """Raises ``diverged(what, step)`` (a ``FloatingPointError``) rather than checkpoint a
    non-finite state."""
    losses = [float(m["loss"]) for m in unlogged]
    if not all(np.isfinite(losses)):
        raise diverged("Training loss became non-finite", step)
    if not bool(_all_finite((state.params, state.batch_stats, state.opt_state))):
        raise diverged("Parameters or optimizer state became non-finite", step)


class _PreemptionNotice:
    """Whether to stop for a preemption after the current step, on every process alike.

    One process: ``SIGTERM`` and ``SIGINT`` handlers (installed for the duration of the
    ``with``) note the first signal in ``signum``. Ctrl-C is noted once: the handler
    gives ``SIGINT`` back to the system, so a second Ctrl-C ends the process at once,
    even inside a checkpoint write or compiled code (the next run removes a save left
    unfinished and resumes from the checkpoint before it; grain's workers end with
    their parent).
    Several processes: JAX's preemption service catches ``SIGTERM`` on any of them and
    picks a step that all processes reach
    (``multihost_utils.reached_preemption_sync_point``); Ctrl-C is not caught there,
    since one process alone cannot save.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.signum = None  # the first signal received
        self._acted_on = False
        self._previous = {}
        self._multiprocess = jax.process_count() > 1
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        # Acted on after the current step. Runs in the main thread between bytecodes,
        # maybe inside a write to sys.stderr: os.write is the one safe way to print here.
        if self.signum is None:
            self.signum = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                os.write(
                    2,
                    b"Ctrl-C: saving a checkpoint after this step, then stopping; "
                    b"press Ctrl-C again to stop at once without it.\n",
                )
            except OSError:  # no stderr: the note is a courtesy
                pass

    def reached(self, step: int) -> bool:
        if not self._multiprocess:
            self._acted_on = self.signum is not None
            return self._acted_on
        from jax.experimental import multihost_utils

        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the preemption service is switched off
            return False

    def __exit__(self, exc_type, exc, tb):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self.signum == signal.SIGINT and not self._acted_on and exc_type is None:
            # Noted after the loop's last look: what Ctrl-C would have done without us.
            raise KeyboardInterrupt
        return False


def step_hooks() -> list:
    """Callables ``hook(step)`` the loop runs after each finished (logged, validated,
    checkpointed) step, as flax's imagenet example runs its report and profile hooks.

    Only the test hook of ``SIGNAL_AT_STEP_ENV`` exists: a real signal at a chosen step,
    for the resume and preemption tests. Without the variable the list is empty.
    """
    spec = os.environ.get(SIGNAL_AT_STEP_ENV)
    if not spec:
        return []
    at, name, *process = spec.split(":")
    if process and int(process[0]) != jax.process_index():
        return []

    def signal_self(step: int) -> None:
        if step != int(at):
            return
        logging.warning(
            "%s=%s: sending %s to this process after step %d.",
            SIGNAL_AT_STEP_ENV,
            spec,
            name,
            step,
        )
        os.kill(os.getpid(), getattr(signal, name))
        if jax.process_count() > 1 and name == "SIGTERM":
            # JAX's preemption service passes the notice on in the background (it polls
            # each second); a real notice comes minutes ahead, a tiny test run is over sooner.
            time.sleep(3)

    return [signal_self]
