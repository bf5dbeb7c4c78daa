"""A tiny end-to-end run: training, logs, checkpoints, evaluate-mode and resume."""

import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from chestattn_jax import evaluation, train
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.metrics import per_class_auc


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 24-step run of the class-based model; shared by every test here."""
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    config = tiny_config("class")
    # Unweighted, a 24-step run shows its fall above the batch-to-batch noise.
    config.loss.class_weights = "none"
    metrics = train.train_and_evaluate(config, workdir)
    return config, workdir, metrics


@pytest.mark.slow
def test_loss_falls(trained):
    _, workdir, _ = trained
    rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in r]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20, 24]
    # Each logged value averages 4 steps; compare the first with the last three.
    assert np.mean([r["train/loss"] for r in rows[-3:]]) < 0.85 * rows[0]["train/loss"]
    assert all(r["train/images_per_sec"] > 0 for r in rows)
    assert all(0 <= r["train/data_wait"] <= 1 for r in rows)
    val = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "val/loss" in r]
    assert [r["step"] for r in val] == [12, 24]
    # Beside the loss, its classification part: Eq. 5 without -λH, which the entropy of
    # the negative classes' maps (H > 0) lowers.
    assert all(r["val/loss"] < r["val/bce"] for r in val)


@pytest.mark.slow
def test_the_best_checkpoint_follows_the_early_stopping_metric(tmp_path):
    """With mean_auc, the best step is the validation with the highest mean AUC, whatever
    the loss says; evaluation restores it; resuming under another metric is refused."""
    workdir = str(tmp_path / "w")
    config = tiny_config("class", num_steps=12, eval_every_steps=4, checkpoints_to_keep=1)
    config.loss.class_weights = "none"
    config.train.early_stopping_metric = "mean_auc"
    config.train.patience = 0
    metrics = train.train_and_evaluate(config, workdir)
    val = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "val/loss" in r]
    best = max(val, key=lambda r: r["val/mean_auc"])["step"]
    checkpointer = Checkpointer(workdir, read_only=True)
    assert checkpointer.preference_order("best")[0] == best == metrics["step"]
    assert best in checkpointer.all_steps()  # kept beside the latest
    config.train.num_steps = 16
    config.train.early_stopping_metric = "loss"
    with pytest.raises(ValueError, match="early_stopping_metric='loss', but this workdir's run"):
        train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_outputs_on_disk(trained):
    _, workdir, metrics = trained
    assert any(
        f.startswith("events.out.tfevents")
        for f in os.listdir(os.path.join(workdir, "tensorboard"))
    )
    assert Checkpointer(workdir, read_only=True).all_steps() == [12, 24]
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["num_examples"] == 72  # not a multiple of the eval batch: nothing dropped
    assert set(on_disk["auc"]) == set(tiny_config().data.classes)
    assert 0.0 <= on_disk["mean_auc"] <= 1.0


@pytest.mark.slow
def test_evaluate_reproduces_metrics_exactly(trained):
    config, workdir, metrics = trained
    again = evaluation.evaluate(config, workdir)
    assert again == metrics
    latest = config.copy_and_resolve_references()
    latest.eval.checkpoint = "latest"
    assert evaluation.evaluate(latest, workdir)["step"] == 24


@pytest.mark.slow
def test_resume_continues_from_latest_checkpoint(trained, tmp_path):
    config, workdir, _ = trained
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    longer = config.copy_and_resolve_references()
    longer.train.num_steps = 32
    longer.train.eval_every_steps = 8
    train.train_and_evaluate(longer, resumed)
    steps = [
        r["step"] for r in read_jsonl(os.path.join(resumed, "metrics.jsonl")) if "train/loss" in r
    ]
    assert steps == [4, 8, 12, 16, 20, 24, 28, 32]  # 24 -> 32 only, nothing retrained
    assert Checkpointer(resumed, read_only=True).latest_step() == 32
    # Run again on a finished workdir: no training, the same test metrics.
    first = evaluation.evaluate(longer, resumed)
    assert train.train_and_evaluate(longer, resumed) == first


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match="not_a_dir"):
        train.train_and_evaluate(tiny_config(), str(path))


def test_batch_not_divisible_by_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    config = tiny_config(batch_size=12)
    with pytest.raises(ValueError, match=r"config.train.batch_size=12.*8 devices"):
        train.train_and_evaluate(config, str(tmp_path / "w"))


def test_evaluate_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        evaluation.evaluate(tiny_config(), str(tmp_path))


def test_per_class_auc_reports_single_valued_classes():
    labels = np.array([[0, 1], [1, 1], [0, 1], [1, 1]])
    probs = np.array([[0.1, 0.3], [0.9, 0.2], [0.2, 0.8], [0.7, 0.5]])
    out = per_class_auc(labels, probs, np.ones_like(labels), ["A", "B"])
    assert out["auc"] == {"A": 1.0, "B": None}
    assert out["undefined_classes"] == ["B"] and out["mean_auc"] == 1.0


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
    ckpt = Checkpointer(str(tmp_path), checkpoints_to_keep=2)
    state = {"w": np.zeros(3, np.float32)}
    for step, val_loss in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 6.0], strict=True):
        ckpt.save(
            step,
            {"w": np.full(3, step, np.float32)},
            None,
            {"best_step": 2, "bad_evals": 0},
            val_loss=val_loss,
        )
    assert ckpt.all_steps() == [2, 4, 5]
    restored, meta = ckpt.restore(2, state)
    np.testing.assert_array_equal(restored["w"], [2, 2, 2])
    assert meta["best_step"] == 2
    ckpt.close()


@pytest.mark.slow
def test_metrics_carry_bootstrap_intervals(trained):
    config, _, metrics = trained
    boot = metrics["bootstrap"]
    assert boot["num_draws"] == config.eval.bootstrap_draws == 1000
    for name in config.data.classes:
        c = boot["classes"][name]
        assert c["auc"] == pytest.approx(metrics["auc"][name])
        assert c["ci"][0] <= c["auc"] <= c["ci"][1]


@pytest.mark.slow
def test_compare_writes_the_paper_table(trained, tmp_path):
    from chestattn_jax.compare import compare

    config, workdir, metrics = trained
    other = str(tmp_path / "copy")
    shutil.copytree(workdir, other)
    out = compare([workdir, other], str(tmp_path / "table"), num_draws=100)
    table = (tmp_path / "table" / "table.md").read_text()
    assert table.count("\n|") == len(config.data.classes) + 2  # separator, classes, mean
    assert "copy - w" in table and "+0.000 [+0.000, +0.000]" in table
    first = next(iter(out["auc"].values()))
    assert first["classes"][config.data.classes[0]]["auc"] == pytest.approx(
        metrics["auc"][config.data.classes[0]]
    )
    # Records of other images, labels or classes cannot be compared pairwise.
    path = os.path.join(other, "eval", "predictions.npz")
    original = dict(np.load(path))
    ids = original["example_ids"].copy()
    ids[[3, 4]] = ids[[4, 3]]  # the same images, in another order
    for change, message in (
        ({"example_ids": ids}, "row 3: '4' against '3'"),
        ({"labels": 1 - original["labels"]}, "other labels"),
        ({"patient_ids": original["patient_ids"][::-1]}, "other patient ids"),
        ({"classes": original["classes"][::-1]}, "classes"),
        ({"labels": original["labels"][:-1]}, "images against"),
    ):
        np.savez(path, **{**original, **change})
        with pytest.raises(ValueError, match=f"another split than .*: .*{re.escape(message)}"):
            compare([workdir, other], str(tmp_path / "t2"), num_draws=10)
    # A record without arrays this version writes: named, never filled in.
    np.savez(path, **{k: v for k, v in original.items() if k not in ("example_ids", "bce")})
    with pytest.raises(ValueError, match=rf"^{re.escape(path)} has no array example_ids, bce: "):
        compare([workdir, other], str(tmp_path / "t2"), num_draws=10)


def test_progress_reports_the_share_of_time_spent_waiting_for_input():
    import time

    from chestattn_jax.metric_writers import Progress

    progress = Progress(total_steps=4, batch_size=2, first_step=0)
    time.sleep(0.05)
    progress.waited(0.04)  # 40 of the ~50 ms spent in next(data_iter)
    first = progress.report(2, {})
    assert 0.4 < first["data_wait"] <= 0.8 and first["images_per_sec"] > 0
    time.sleep(0.05)  # nothing waited since the last report: the counter was reset
    assert progress.report(4, {})["data_wait"] == 0.0


def _without_log_lines(text: str) -> list[str]:
    """The lines of a command's stderr that are not absl log records (``I1206 06:23:47...``)."""
    return [line for line in text.splitlines() if not re.match(r"^[IWE]\d{4} \d\d:", line)]


@pytest.mark.parametrize(
    "args",
    [
        ["--config={repo}/configs/synthetic.py", "--workdir=gs://bucket/w"],
        ["--config={repo}/configs/synthetic.py", "--workdir=gs://bucket/w", "--mode=evaluate"],
        [
            "--config={repo}/configs/nih.py",
            "--workdir={tmp}/w",
            "--config.data.data_dir=gs://bucket/d",
        ],
    ],
    ids=["train", "evaluate", "data_dir"],
)
@pytest.mark.slow
def test_gcs_path_without_the_gcs_extra_is_one_fatal_line(tmp_path, cli, args):
    """Without gcsfs (the gcs extra), a gs:// workdir or data_dir ends the command with one
    FATAL line naming the path and the extra to install, and writes nothing."""
    # gcsfs is installed here: a package of that name that fails to import, first on the
    # path, is what Python sees where it is not.
    hidden = tmp_path / "hide_gcsfs" / "gcsfs"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gcsfs'\", name='gcsfs')\n"
    )
    run_dir = tmp_path / "cwd"  # a gs:// path mistaken for a local one would land here
    run_dir.mkdir()
    path = os.pathsep.join(p for p in (str(hidden.parent), os.environ.get("PYTHONPATH")) if p)
    result = cli(
        *(a.format(tmp=tmp_path, repo=REPO) for a in args),
        cwd=run_dir,
        env={"PYTHONPATH": f"{path}{os.pathsep}{REPO}"},
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    lines = _without_log_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    url = "gs://bucket/d" if "data_dir" in " ".join(args) else "gs://bucket/w"
    assert lines[0].startswith("FATAL: ") and url in lines[0], lines
    assert "pip install 'chestattn-jax[gcs]'" in lines[0], lines
    assert list(run_dir.iterdir()) == [] and not (tmp_path / "w").exists()
