"""What a command may write into a workdir, and when: a refused run writes nothing,
evaluations under other settings never overwrite each other, one training run at a time."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, copy_workdir, set_fields

from chestattn_jax import evaluation, train
from chestattn_jax.workdir import LOCK_FILE, TrainLock, WorkdirBusy


def snapshot(workdir):
    """Every file of a workdir with its bytes."""
    return {
        os.path.relpath(os.path.join(d, f), workdir): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(workdir)
        for f in files
    }


def like(config, **changes):
    """A copy of ``config`` with dotted fields changed: ``like(c, **{"data.std": 0.3})``."""
    return set_fields(config.copy_and_resolve_references(), changes)


@pytest.mark.slow
def test_refused_training_writes_nothing(tiny_run, tmp_path):
    """A run refused because the checkpoints are of another model leaves config.json (and
    everything else) as it was, so that evaluate with the right config still works."""
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    before = snapshot(workdir)
    image = like(config, **{"model.variant": "image"})
    with pytest.raises(ValueError, match=r"config.model.variant is 'image' but the checkpoint"):
        train.train(image, str(workdir))
    after = snapshot(workdir)
    # Only the lock is taken (and names its new holder); nothing else is touched.
    assert set(after) == set(before) | {LOCK_FILE}
    assert {k: v for k, v in after.items() if k != LOCK_FILE} == {
        k: v for k, v in before.items() if k != LOCK_FILE
    }
    metrics = evaluation.evaluate(config, str(workdir))
    assert metrics["variant"] == "class"


@pytest.mark.parametrize(
    "field, value, trained_with",
    [
        ("data.image_size", 64, 32),
        ("data.std", 0.3, 0.25),
        ("data.synthetic.seed", 1, 0),
        # Other phantoms are scored: refused too, named by the field, not by a hash.
        ("data.synthetic.test_size", 100, 72),
    ],
)
@pytest.mark.slow
def test_evaluation_under_other_data_settings_is_refused(
    tiny_run, tmp_path, field, value, trained_with
):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    before = snapshot(workdir)
    with pytest.raises(
        ValueError,
        match=rf"config.{field} is {value} but the workdir was trained with "
        rf"{trained_with}.*--config.allow_setting_changes=true",
    ) as raised:
        evaluation.evaluate(like(config, **{field: value}), str(workdir))
    assert "fingerprint" not in str(raised.value) and "sha256" not in str(raised.value)
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_config_json_without_a_field_is_refused_naming_it(tiny_run, tmp_path):
    """A config.json that lacks fields this version always writes is refused, naming the
    file and the fields, by load and by evaluation's checks: no default stands in."""
    import chestattn_jax

    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    path = workdir / "config.json"
    saved = json.loads(path.read_text())
    del saved["model"]["skip_unused_stage4"], saved["model"]["gate_stages"]
    path.write_text(json.dumps(saved))
    before = snapshot(workdir)
    with pytest.raises(ValueError) as raised:
        chestattn_jax.load(str(workdir))
    assert f"{path} has no field model.gate_stages, model.skip_unused_stage4: " in str(raised.value)
    with pytest.raises(ValueError, match=r"config\.json has no field model\.gate_stages: .*new"):
        evaluation.trained_setting_changes(str(workdir), config)
    saved["model"]["gate_stages"] = [1, 2, 3]
    del saved["data"]["std"]
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"config\.json has no field data\.std: "):
        evaluation.evaluate(config, str(workdir))
    assert snapshot(workdir) == {**before, "config.json": path.read_bytes()}


@pytest.mark.slow
def test_the_data_set_is_compared_by_fingerprint_not_by_where_it_lies(tiny_run, tmp_path):
    """Where the data set lies (raw_dir) is never compared; a fingerprint that differs with
    no field to explain it is named as such."""
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    recorded = json.loads((workdir / "dataset.json").read_text())
    now = {**recorded, "raw_dir": "/mnt/elsewhere"}
    assert evaluation.trained_setting_changes(str(workdir), config, now) == {}
    other = {**recorded, "fingerprint": "sha256:" + "0" * 64}
    changes = evaluation.trained_setting_changes(str(workdir), config, other)
    assert changes == {"dataset fingerprint": (recorded["fingerprint"], other["fingerprint"])}


@pytest.mark.slow
def test_allowed_change_is_recorded_in_a_folder_of_its_own(tiny_run, tmp_path):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    test_results = (workdir / "eval" / "metrics.json").read_bytes()
    bigger = like(config, **{"data.image_size": 64, "allow_setting_changes": True})
    metrics = evaluation.evaluate(bigger, str(workdir))
    assert (workdir / "eval" / "metrics.json").read_bytes() == test_results
    folders = sorted(p.name for p in workdir.iterdir() if p.name.startswith("eval_test_best_"))
    assert len(folders) == 1, folders
    on_disk = json.loads((workdir / folders[0] / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["settings"]["data.image_size"] == 64
    assert on_disk["changed_from_training"] == {"data.image_size": {"trained": 32, "evaluated": 64}}
    assert "32 px" not in (workdir / folders[0] / "per_class.md").read_text()
    assert "64 px" in (workdir / folders[0] / "per_class.md").read_text()


@pytest.mark.slow
def test_other_split_and_checkpoint_do_not_overwrite_the_test_results(tiny_run, tmp_path):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    test_results = json.loads((workdir / "eval" / "metrics.json").read_text())
    val = evaluation.evaluate(like(config, **{"eval.split": "validation"}), str(workdir))
    latest = evaluation.evaluate(like(config, **{"eval.checkpoint": "latest"}), str(workdir))
    assert json.loads((workdir / "eval" / "metrics.json").read_text()) == test_results
    on_disk = json.loads((workdir / "eval_validation_best" / "metrics.json").read_text())
    assert on_disk["split"] == val["split"] == "validation"
    assert on_disk["settings"]["eval.split"] == "validation"
    assert on_disk["num_examples"] == config.data.synthetic.validation_size
    on_disk = json.loads((workdir / "eval_test_latest" / "metrics.json").read_text())
    assert on_disk["step"] == latest["step"] == 8
    assert test_results["settings"]["eval.checkpoint"] == "best"


@pytest.mark.slow
def test_an_evaluation_with_other_settings_is_not_overwritten(tiny_run, tmp_path):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    before = snapshot(workdir)
    fewer = like(config, **{"eval.bootstrap_draws": 10})
    with pytest.raises(
        ValueError,
        match=r"holds an evaluation with other settings \(eval.bootstrap_draws: "
        r"1000 there, 10 now\).*--config.eval.output_name",
    ):
        evaluation.evaluate(fewer, str(workdir))
    assert snapshot(workdir) == before
    named = like(fewer, **{"eval.output_name": "eval_10_draws"})
    assert evaluation.evaluate(named, str(workdir))["bootstrap"]["num_draws"] == 10
    assert (
        json.loads((workdir / "eval_10_draws" / "metrics.json").read_text())["settings"][
            "eval.bootstrap_draws"
        ]
        == 10
    )
    # The same settings again: the folder is that evaluation's, and is rewritten.
    assert evaluation.evaluate(named, str(workdir))["bootstrap"]["num_draws"] == 10
    # A metrics.json that does not record its settings is refused, named, and kept.
    path = workdir / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["settings"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError) as raised:
        evaluation.evaluate(config, str(workdir))
    assert str(raised.value).startswith(f"{path} has no field settings: it was not written")
    assert json.loads(path.read_text()) == metrics


@pytest.mark.slow
def test_an_evaluation_with_fewer_evaluators_leaves_no_file_of_the_earlier_one(tiny_run, tmp_path):
    """Issue 21 case 6: an evaluation with fewer evaluators left the earlier one's figures
    and attention_examples.npz (which compare reads) beside its new metrics.json. The
    folder holds one evaluation; a file no evaluation wrote stays."""
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    eval_dir = workdir / "eval"
    earlier = set(os.listdir(eval_dir))
    assert {"roc_curves.png", "overlays.png", "attention_examples.npz"} <= earlier
    (eval_dir / "my_notes.txt").write_text("mine")
    fewer = like(config, **{"eval.evaluators": ("tables", "auc")})
    metrics = evaluation.evaluate(fewer, str(workdir))
    wrote = {"metrics.json", "predictions.npz", "per_class.csv", "per_class.md"}
    assert set(os.listdir(eval_dir)) == wrote | {"my_notes.txt"}
    assert set(metrics["files"]) == wrote
    # And back to every evaluator: the figures return, the notes stay.
    evaluation.evaluate(config, str(workdir))
    assert set(os.listdir(eval_dir)) == earlier | {"my_notes.txt"}


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from chestattn_jax.workdir import TrainLock
    with TrainLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_second_training_run_is_refused_and_named(tiny_run, tmp_path):
    config, trained = tiny_run
    workdir = copy_workdir(trained, tmp_path / "w")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir)],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(workdir)
        with pytest.raises(
            WorkdirBusy,
            match=rf"Another training run is using --workdir "
            rf"{workdir} \(process {holder.pid} on host .*, started .*\)",
        ):
            train.train(like(config, **{"train.num_steps": 12}), str(workdir))
        assert snapshot(workdir) == before
        # kill -9: the kernel releases the lock; nothing stale is left to clean up.
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with TrainLock(workdir):
            with pytest.raises(WorkdirBusy), TrainLock(workdir):
                pass  # a second holder, even in this process, is refused
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
