"""Exact resume: runs killed with SIGKILL, preempted with SIGTERM or left with a damaged
checkpoint end bitwise equal to an uninterrupted run; a non-finite loss stops training."""

import json
import os
import shutil
import signal
import struct

import jax
import numpy as np
import pytest
from conftest import (
    assert_bitwise_equal,
    final_state,
    metric_rows,
    resume_config,
)
from conftest import run_training as run

from chestattn_jax import train
from chestattn_jax.checkpointing import UNREADABLE_DIR, Checkpointer, CheckpointMismatch
from chestattn_jax.metric_writers import read_jsonl

# Every run here, and in test_distributed, is a process of its own, as a restart is
# (conftest.start_training), with the session's XLA flags and compilation cache.


def tensorboard_starts(workdir):
    """The steps of the purge ("start") events in the TensorBoard event files, in order."""
    from tensorboardX.proto import event_pb2

    starts = []
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecords: length (8 bytes), its CRC, the record, its CRC
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if event.HasField("session_log"):
                starts.append(event.step)
    return starts


def damage(workdir, step):
    """What a kill or a failing disk leaves: Orbax's temporary directory of the next
    save, and checkpoint ``step`` with its largest array file cut in half."""
    step_dir = workdir / "checkpoints" / str(step)
    shutil.copytree(step_dir, workdir / "checkpoints" / f"{step + 1}.orbax-checkpoint-tmp-17000")
    chunk = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=os.path.getsize)
    chunk.write_bytes(chunk.read_bytes()[: os.path.getsize(chunk) // 2])
    return step_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, resume_reference):
    """An uninterrupted run, and one preempted, killed and left with a damaged latest
    checkpoint on the way to the end: each stage a process of its own."""
    root = tmp_path_factory.mktemp("resume")
    resumed = root / "resumed"
    stages = {}
    resume_reference.start()  # if not yet running, it shares the 2 CPUs with stage 1
    # SIGTERM after step 9, neither a log nor a validation step: the checkpoint also
    # carries step 9's loss, which step 12 logs with those of 10..12.
    stages["sigterm"] = run(resumed, signal_at="9:SIGTERM")
    ckpt = Checkpointer(resumed, read_only=True)
    stages["after_sigterm"] = (ckpt.all_steps(), ckpt.read_meta(9)["unlogged_train_metrics"])
    shutil.copytree(resumed, root / "at_step_9")
    # Resumed at 9, killed after step 17: checkpoint 12 is there, and step 16 was logged after it.
    stages["sigkill"] = run(resumed, signal_at="17:SIGKILL")
    stages["after_sigkill"] = (
        Checkpointer(resumed, read_only=True).all_steps(),
        [r["step"] for r in read_jsonl(resumed / "metrics.jsonl")],
    )
    # Checkpoint 12 damaged: the last stage sets it aside and resumes at 9 again.
    stages["damaged"] = damage(resumed, 12)
    stages["last"] = run(resumed)
    yield resume_reference.done(), resumed, root, stages


@pytest.mark.slow
def test_preempted_killed_and_damaged_run_ends_bitwise_equal(runs):
    reference, resumed, root, stages = runs
    code, out = stages["sigterm"]
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "Preempted (SIGTERM): saved the checkpoint of step 9" in out
    steps, unlogged = stages["after_sigterm"]
    assert steps == [6, 9] and len(unlogged) == 1

    code, out = stages["sigkill"]
    assert code == -signal.SIGKILL, out[-3000:]
    steps, logged = stages["after_sigkill"]
    assert steps == [6, 9, 12]  # the 2 latest, and the best (lowest validation loss)
    assert logged[-1] == 16  # a row after the last checkpoint, to be dropped on resume

    code, out = stages["last"]
    assert code == 0, out[-3000:]
    step_dir = stages["damaged"]
    warnings = [line for line in out.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1 and f"Checkpoint {step_dir} is unreadable" in warnings[0], out
    assert (resumed / UNREADABLE_DIR / "12").is_dir()
    assert not list((resumed / "checkpoints").glob("*tmp*"))

    step, state = final_state(resumed)
    ref_step, ref_state = final_state(reference)
    assert step == ref_step == 18  # stopped early, at the same validation
    assert_bitwise_equal(state, ref_state)
    rows, ref_rows = metric_rows(resumed), metric_rows(reference)
    assert [r["step"] for r in ref_rows if "train/loss" in r] == [4, 8, 12, 16]
    assert rows == ref_rows
    # TensorBoard hides what the stages logged after the step each next one resumed at.
    assert tensorboard_starts(resumed) == [1, 10, 10]
    # The params moved: equality is not two untouched initialisations.
    early = jax.tree.leaves(final_state(root / "at_step_9")[1]["params"])
    late = jax.tree.leaves(state["params"])
    assert not all(np.array_equal(a, b) for a, b in zip(early, late, strict=True))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(runs, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(runs[2] / "at_step_9", workdir)
    # Adam's first step from the checkpoint moves every weight by ~1e30.
    code, out = run(workdir, learning_rate=1e30)
    assert code == 1, out[-3000:]
    assert "FloatingPointError: Training loss became" in out, out[-3000:]
    assert f"by step 12; the last good checkpoint is {workdir}/checkpoints/9 (step 9)" in out
    # In the same line, what to change: the settings that make a run diverge, the flags
    # to try, and that the same command with one of them resumes.
    line = next(line for line in out.splitlines() if line.startswith("FloatingPointError: "))
    assert (
        "Settings: config.train.learning_rate=1e+30 (adam, constant, no warm-up; 1e+30 at "
        "step 12); config.loss.class_weights='paper' (largest " in line
    ), line
    for flag in (
        "--config.train.learning_rate=1e+29",
        "--config.train.warmup_steps=1",
        "--config.loss.class_weights=none",
    ):
        assert flag in line, line
    assert "dtype" not in line  # float32: not a suspect
    assert line.endswith("the same command with one of them resumes from step 9."), line
    assert Checkpointer(workdir, read_only=True).all_steps() == [6, 9]
    step, state = final_state(workdir)
    assert step == 9
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 6, 8]  # nothing after the checkpoint


def test_divergence_advice_names_the_schedule_the_weights_and_a_16_bit_dtype():
    config = resume_config()
    config.train.update(schedule="cosine", warmup_steps=4, learning_rate=3e-3)
    config.model.dtype = "float16"
    weights = np.array([1.0, 40.0, 2.0, 3.0, 1.5], np.float32)
    advice = train.divergence_advice(config, 2, weights, None)
    assert advice == (
        "Settings: config.train.learning_rate=0.003 (adam, cosine decay over 24 steps after "
        "4 warm-up steps; 0.0015 at step 2); config.loss.class_weights='paper' (largest 40, "
        "Effusion); config.model.dtype=float16 (largest value 65504). Try a 10x lower rate "
        "(--config.train.learning_rate=0.0003), or a longer warm-up "
        "(--config.train.warmup_steps=8), or unweighted classes "
        "(--config.loss.class_weights=none), or full precision (--config.model.dtype=float32)"
        ": run the same command with one of them to start over."
    )
    config.model.dtype, config.loss.class_weights = "bfloat16", "none"
    advice = train.divergence_advice(config, 2, np.ones(5), 1)
    assert "class_weights='none' (all 1); config.model.dtype=bfloat16" in advice
    assert "class_weights=none" not in advice and advice.endswith("resumes from step 1.")


def test_preemption_handler_is_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with train._PreemptionNotice() as notice:
        assert signal.getsignal(signal.SIGTERM) is not before
        assert not notice.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)  # caught: this process lives on
        assert notice.reached(2)
    assert signal.getsignal(signal.SIGTERM) is before


def test_gcs_workdir_is_kept_as_a_url():
    """gs:// workdirs reach Orbax, TensorBoard and the logs as URLs (no I/O here)."""
    from chestattn_jax.checkpointing import workdir_path
    from chestattn_jax.metric_writers import is_local

    path = workdir_path("gs://bucket/runs/a")
    assert os.fspath(path / "checkpoints") == "gs://bucket/runs/a/checkpoints"
    assert not is_local(path / "metrics.jsonl")
    assert is_local(workdir_path("relative/dir")) and workdir_path("relative/dir").is_absolute()


def test_metric_log_resumes_at_the_checkpoint_step(tmp_path):
    """Rows after the restored step, and a last line cut short by a kill, are dropped."""
    from chestattn_jax.metric_writers import MetricWriter

    rows = [{"step": 4, "train/loss": 1.0}, {"step": 8, "val/loss": 2.0}, {"step": 12}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 16, "train/lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    writer = MetricWriter(tmp_path, resume_step=8)
    writer.write_scalars(12, {"train/loss": float("nan")})
    writer.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [*rows[:2], {"step": 12, "train/loss": None}]
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n{}\n")
        read_jsonl(tmp_path / "bad.jsonl")


def test_checkpoints_of_another_config_are_an_error_not_damage(tmp_path):
    """When no step restores (the model changed), nothing is set aside or overwritten."""
    checkpointer = Checkpointer(tmp_path)
    for step in (1, 2):
        checkpointer.save(step, {"w": np.zeros(3, np.float32)}, None, {}, val_loss=float(step))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wider = {"w": jax.ShapeDtypeStruct((4,), np.float32, sharding=device)}
    with pytest.raises(
        CheckpointMismatch,
        match=r"checkpoints/2 does not fit .*shapes differ: \['w'\] stored "
        r"\(3,\), config wants \(4,\).*needs its own --workdir",
    ):
        checkpointer.restore_latest(wider)
    assert checkpointer.all_steps() == [1, 2]
    assert not (tmp_path / UNREADABLE_DIR).exists()
    checkpointer.close()
