"""Damaged checkpoints and failed saves: one rule for training and evaluation, the right
diagnosis, and one FATAL line naming the file and the cause."""

import logging
import os
import resource
import sys
import types

import pytest
from conftest import copy_workdir, the_one_fatal_line, tiny_config, tiny_flags

from chestattn_jax import checkpointing, evaluation, train
from chestattn_jax.checkpointing import Checkpointer, CheckpointError


def damage(workdir, step):
    """What a failing disk leaves: checkpoint ``step``'s largest array file cut in half."""
    state = workdir / "checkpoints" / str(step) / "state"
    chunk = max((p for p in state.rglob("*") if p.is_file()), key=os.path.getsize)
    chunk.write_bytes(chunk.read_bytes()[: os.path.getsize(chunk) // 2])


def listing(directory):
    return sorted(
        os.path.relpath(os.path.join(d, f), directory)
        for d, _, fs in os.walk(directory)
        for f in fs
    )


@pytest.mark.slow
def test_evaluation_passes_over_a_damaged_best_checkpoint(tiny_run, tmp_path, caplog):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    best, other = Checkpointer(workdir, read_only=True).preference_order("best")
    damage(workdir, best)
    before = listing(workdir / "checkpoints")
    with caplog.at_level(logging.WARNING):
        metrics = evaluation.evaluate(config, str(workdir))
    assert metrics["step"] == other
    warnings = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"Checkpoint {workdir}/checkpoints/{best} (the best) is unreadable (ValueError: "
    )
    assert f"using step {other} instead" in warnings[0]
    assert "Error reading" in warnings[0]  # TensorStore's own words, naming the array
    assert listing(workdir / "checkpoints") == before  # evaluation moves nothing


@pytest.mark.slow
def test_no_readable_checkpoint_is_damage_not_a_config_change(tiny_run, tmp_path):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    for step in Checkpointer(workdir, read_only=True).all_steps():
        damage(workdir, step)
    before = listing(workdir)
    config_json = (workdir / "config.json").read_bytes()
    for run in (evaluation.evaluate, train.train):
        with pytest.raises(CheckpointError) as raised:
            run(config, str(workdir))
        message = str(raised.value)
        assert message.startswith(f"No checkpoint in {workdir}/checkpoints can be read.")
        assert (
            f"step 8 ({workdir}/checkpoints/8): ValueError: OUT_OF_RANGE: Error reading" in message
        )
        assert f"step 4 ({workdir}/checkpoints/4)" in message
        assert "config" not in message
        # Nothing is moved, deleted or rewritten (config.json included); train.lock, left
        # by the training run that made the workdir, is only taken again.
        assert listing(workdir) == before
        assert (workdir / "config.json").read_bytes() == config_json


@pytest.mark.slow
def test_command_line_names_the_damaged_file_once(tiny_run, tmp_path, cli):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    for step in Checkpointer(workdir, read_only=True).all_steps():
        damage(workdir, step)
    # Exactly the config the workdir was trained with: what fails is the damage alone.
    proc = cli(f"--workdir={workdir}", *tiny_flags(config), "--mode=evaluate")
    fatal = the_one_fatal_line(proc)
    assert f"No checkpoint in {workdir}/checkpoints can be read" in fatal
    assert "OUT_OF_RANGE: Error reading" in fatal


def _limit_file_size():
    # A disk that refuses to grow a file past 256 KiB: every checkpoint write fails
    # (EFBIG, "File too large"), the small logs and config files do not.
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@pytest.mark.slow
def test_checkpoint_bookkeeping_without_its_fields_is_refused_naming_them(tiny_run, tmp_path):
    """A step whose meta lacks the best score and the ranking metric, or whose metrics lack
    the score, is refused naming the file and the fields: no default ranks it."""
    import json

    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    checkpointer = Checkpointer(workdir, read_only=True)
    meta = checkpointer.step_dir(8) / "meta" / "metadata"
    saved = json.loads(meta.read_text())
    del saved["best_score"], saved["early_stopping_metric"]
    meta.write_text(json.dumps(saved))
    resumed = config.copy_and_resolve_references()
    resumed.train.num_steps = 12
    with pytest.raises(ValueError) as raised:
        train.train_and_evaluate(resumed, str(workdir))
    assert str(raised.value).startswith(
        f"{meta} has no field best_score, early_stopping_metric: it was not written by this version"
    )
    metrics = checkpointer.step_dir(4) / "metrics" / "metrics"
    metrics.write_text(json.dumps({"val_loss": 2.0}))
    with pytest.raises(ValueError, match=rf"^{metrics} has no field score: .* new --workdir"):
        checkpointer.preference_order("best")
    assert checkpointer.preference_order("latest") == [8, 4]


@pytest.mark.slow
def test_a_failed_save_is_one_fatal_line_and_loses_nothing(tmp_path, cli):
    workdir = tmp_path / "w"
    # tiny_run's model and steps (compiled already), to its first checkpoint, at step 4.
    config = tiny_config("class", num_steps=4, eval_every_steps=4)
    config.loss.class_weights = "none"
    proc = cli(f"--workdir={workdir}", *tiny_flags(config), preexec_fn=_limit_file_size)
    fatal = the_one_fatal_line(proc)
    assert f"Could not write checkpoint step 4 in {workdir}/checkpoints" in fatal, fatal
    assert "File too large" in fatal, fatal  # seen once missing: print the whole line
    assert "run the same command again to resume" in fatal
    # The half-written step is never taken for a checkpoint, and is cleared at the next start.
    assert Checkpointer(workdir, read_only=True).all_steps() == []
    Checkpointer(workdir).close()
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def test_only_echoes_of_a_reported_failure_are_silenced(tmp_path, caplog, monkeypatch):
    """What is silenced after a failed save or read is that failure printed again; an
    error of an operation that succeeded, or of anything else, is printed."""
    logger = logging.getLogger("absl")
    step = tmp_path / "checkpoints" / "4"
    written = f'Error writing "a/0" at local file "{step}.orbax-checkpoint-tmp/d/f1"'

    def orbax_logs(text):  # as Orbax's _SignalingThread logs an error it then hands on
        try:
            raise ValueError(text)
        except ValueError:
            exc_info = sys.exc_info()
        pathname = os.path.join(os.sep, "site", "orbax", "future.py")
        logger.handle(logger.makeRecord("absl", logging.ERROR, pathname, 1, "raised", (), exc_info))

    with checkpointing._echoes_dropped(step):  # held while the write runs ...
        orbax_logs(written)
        assert not caplog.records
    assert len(caplog.records) == 1  # ... and printed, since the write did not fail
    caplog.clear()

    with pytest.raises(ValueError), checkpointing._echoes_dropped(step):
        orbax_logs(written)
        raise ValueError(written)  # the caller reports this one
    orbax_logs(written.replace("a/0", "b/0"))  # another array of the failed step, later
    printed = []
    monkeypatch.setattr(checkpointing._ECHOES, "previous_hook", printed.append)
    closed = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    checkpointing._ECHOES.unraisable_hook(closed)
    assert not caplog.records and not printed
    orbax_logs(f'Error writing "a/0" at local file "{step}0/d/f1"')  # step 40: another step
    orbax_logs("Something else entirely")
    other = types.SimpleNamespace(exc_value=RuntimeError("another"))
    checkpointing._ECHOES.unraisable_hook(other)
    assert len(caplog.records) == 2 and printed == [other]


def test_a_long_cause_keeps_the_file_and_the_reason():
    """describe() keeps the file at fault and the OS's reason of a long TensorStore error,
    and drops the C++ source locations it may carry."""
    path = "/a/long/workdir/" + "x" * 600 + "/checkpoints/4/state/d/f1"
    where = "\n".join(f"tensorstore/kvstore/file/file_key_value_store.cc:{i}" for i in range(9))
    error = ValueError(
        f'OUT_OF_RANGE: Error writing "params.w/0" at local file "{path}": Failed to write '
        f"600253 bytes: File too large [os_error_code='27'] [source locations='{where}']"
    )
    try:
        raise RuntimeError("saving failed") from error
    except RuntimeError as e:
        text = checkpointing.describe(e)
    assert text.startswith('ValueError: OUT_OF_RANGE: Error writing "params.w/0"')
    assert text.endswith("File too large [os_error_code='27']") and "source locations" not in text
    assert " ... " in text and len(text) < 520
