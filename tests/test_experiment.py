"""The paper's experiment: a grid of cells run (and skipped once done), λ chosen on
validation, and Tables 1-2 pooled over folds, checked against direct computations."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, config_overrides, load_config, tiny_config
from sklearn.metrics import roc_auc_score

from chestattn_jax import config as config_lib
from chestattn_jax import experiment
from chestattn_jax.evaluation.record import Record
from chestattn_jax.metrics import patient_draw_weights

DRAWS = 50


def grid_config():
    config = tiny_config("class", num_steps=4, eval_every_steps=4)
    config.loss.class_weights = "none"
    config.train.early_stopping_metric = "bce"
    config.experiment.folds = 2
    config.experiment.variants = ("image", "class")
    config.experiment.entropy_weights = (0.1,)  # choosing among λ: a test of its own below
    config.eval.bootstrap_draws = 0  # the report draws its own
    config.eval.evaluators = ("auc", "localization")
    return config


def test_cells_name_the_grid():
    config = load_config("nih")
    config.data.data_dir = "/prepared"
    grid = experiment.cells(config)
    # 3 folds x (resnet, image, 3 λ of the class model) x 1 seed
    assert len(grid) == 15 and [c.index for c in grid] == list(range(15))
    assert grid[4].name == "fold0-class-lam1-seed0" and grid[5].name == "fold1-resnet-seed0"
    assert experiment.find_cell(config, "7") == experiment.find_cell(
        config, "fold1-class-lam0-seed0"
    )
    with pytest.raises(ValueError, match=r"--cell='fold9' is not a cell.*from 0 to 14"):
        experiment.find_cell(config, "fold9")
    c = experiment.cell_config(config, grid[8])  # fold 1, class, λ = 0.1
    assert (c.data.split, c.data.num_folds, c.data.fold) == ("kfold", 3, 1)
    assert (c.model.variant, c.loss.entropy_weight) == ("class", 0.1)
    assert config.data.split == "random"  # the experiment's config is left as it was
    phantoms = experiment.cell_config(grid_config(), experiment.cells(grid_config())[3])
    assert phantoms.data.synthetic.seed == 1  # fold 1 draws its own phantoms


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("experiment.folds", 0, "must be at least 1"),
        ("experiment.variants", ("class", "klass"), "distinct variants from resnet"),
        ("experiment.entropy_weights", (0.1, -1.0), "each at least 0"),
        ("experiment.seeds", (0, 0), "distinct integers"),
        ("experiment.lambda_criterion", "loss", "expected one of mean_auc, bce"),
    ],
)
def test_experiment_fields_are_checked(field, value, message):
    config = grid_config()
    config.experiment[field.split(".")[1]] = value
    found = config_lib.problems(config, "train", num_devices=1)
    assert len(found) == 1 and found[0].startswith(f"config.{field}=") and message in found[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("experiment") / "root")
    config = grid_config()
    experiment.run(config, root)
    return config, root


def test_every_cell_ran_and_a_second_run_skips_them(finished, monkeypatch):
    from chestattn_jax import train

    config, root = finished
    assert [experiment.status(root, c) for c in experiment.cells(config)] == ["done"] * 4
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: calls.append(a))
    experiment.run(config, root)
    assert calls == []  # finished cells are skipped
    experiment.run(config, root, "fold1-image-seed0")  # one named cell runs again
    assert len(calls) == 1 and calls[0][1].endswith("fold1-image-seed0")


def test_report_pools_the_folds_and_matches_direct_computations(finished):
    config, root = finished
    out = experiment.report(config, root, num_draws=DRAWS, seed=3)
    r = out["seeds"]["0"]
    records = {}
    for fold in (0, 1):
        # λ: the highest validation mean AUC at each λ cell's evaluated step.
        scores = {}
        for lam in (0.1,):
            w = os.path.join(root, f"fold{fold}-class-lam{lam:g}-seed0")
            with open(os.path.join(w, "eval", "metrics.json")) as f:
                step = json.load(f)["step"]
            with open(os.path.join(w, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f]
            scores[lam] = next(
                x["val/mean_auc"] for x in rows if x.get("step") == step and "val/mean_auc" in x
            )
        assert r["lambda"][fold]["lambda"] == max(sorted(scores), key=lambda k: scores[k])
        lam = r["lambda"][fold]["lambda"]
        for v, name in (("image", "image"), ("class", f"class-lam{lam:g}")):
            path = os.path.join(root, f"fold{fold}-{name}-seed0", "eval", "predictions.npz")
            records.setdefault(v, []).append(Record.load(path))
    classes = list(records["image"][0].classes)
    labels = np.concatenate([x.labels for x in records["image"]])
    mask = np.concatenate([x.mask for x in records["image"]])
    patients = np.concatenate(
        [[f"{f}/{p}" for p in x.patient_ids] for f, x in enumerate(records["image"])]
    )
    assert r["num_examples"] == len(labels) == 2 * 72
    weights = patient_draw_weights(patients, DRAWS, 3)
    for v in ("image", "class"):
        probs = np.concatenate([x.probs for x in records[v]])
        for j, c in enumerate(classes):
            keep = mask[:, j] > 0
            y, p = labels[keep, j], probs[keep, j]
            pooled = r["pooled"][v]["classes"][c]
            assert pooled["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
            # The pooled bootstrap, directly: sklearn on each draw's patient weights.
            draws = [
                roc_auc_score(y, p, sample_weight=w[keep])
                for w in weights
                if len(set(y[w[keep] > 0])) == 2
            ]
            low, high = np.quantile(draws, [0.025, 0.975])
            assert pooled["ci"] == pytest.approx([low, high], abs=1e-9)
            # Mean ± sd over folds: each fold's own AUC.
            per_fold = [f["auc"][c] for f in r["per_fold"][v]]
            for x, a in zip(records[v], per_fold, strict=True):
                k = x.mask[:, j] > 0
                assert a == pytest.approx(roc_auc_score(x.labels[k, j], x.probs[k, j]), abs=1e-9)
    d = r["differences"]["class - image"]["classes"]
    for c in classes:
        ups = [
            a["auc"][c] > b["auc"][c]
            for a, b in zip(r["per_fold"]["class"], r["per_fold"]["image"], strict=True)
        ]
        assert d[c]["folds_positive"] == sum(ups) and d[c]["folds_defined"] == 2
        assert d[c]["difference"] == pytest.approx(
            r["pooled"]["class"]["classes"][c]["auc"] - r["pooled"]["image"]["classes"][c]["auc"]
        )
    # Localisation, mean over folds, beside the same folds' baselines.
    loc = r["localization"]
    assert set(loc) == {"image", "class", "class_prior", "uniform"}
    for v, name in (
        ("image", lambda f: "image"),
        ("class", lambda f: f"class-lam{r['lambda'][f]['lambda']:g}"),
    ):
        per_fold = []
        for fold in (0, 1):
            with open(
                os.path.join(root, f"fold{fold}-{name(fold)}-seed0", "eval", "metrics.json")
            ) as f:
                per_fold.append(json.load(f)["localization"])
        assert loc[v]["mean"] == pytest.approx(
            np.mean([x["pointing_game"]["mean_hit_rate"] for x in per_fold])
        )
        prior = np.mean(
            [x["baselines"]["class_prior"]["pointing_game"]["mean_hit_rate"] for x in per_fold]
        )
        assert loc["class_prior"]["mean"] == pytest.approx(prior)
    report_dir = os.path.join(root, "report")
    assert {"table.md", "table.csv", "report.json", "forest.png"} <= set(os.listdir(report_dir))
    table = open(os.path.join(report_dir, "table.md")).read()
    assert "class - image [95% CI]" in table and "fold 0: λ = " in table
    assert "| class | image | class | class prior | uniform |" in table
    assert table.count("\n| ") == 2 * (len(classes) + 1 + 1)  # AUC and localisation tables


def test_report_refuses_unfinished_cells(finished, tmp_path):
    config, _ = finished
    with pytest.raises(ValueError, match=r"4 cells of .* are not finished: fold0-image-seed0"):
        experiment.report(config, str(tmp_path / "empty"))


def run_experiment(root, config, *flags):
    """``python -m chestattn_jax.experiment`` on ``root`` with ``config`` as overrides."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chestattn_jax.experiment",
            "--config=configs/synthetic.py:class",
            f"--workdir={root}",
            *flags,
            *config_overrides(config, load_config("synthetic", "class")),
        ],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_line_lists_the_cells(finished):
    config, root = finished
    proc = run_experiment(root, config, "--list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and all("done" in line for line in lines)
    assert lines[1].split()[:2] == ["1", "fold0-class-lam0.1-seed0"]
    bad = run_experiment(root, config, "--cell=99")
    assert bad.returncode != 0 and "FATAL: --cell='99' is not a cell" in bad.stderr


@pytest.mark.parametrize("criterion, expected", [("mean_auc", 1.0), ("bce", 0.1)])
def test_lambda_choice_never_takes_an_undefined_score(criterion, expected, monkeypatch):
    config = grid_config()
    config.experiment.entropy_weights = (0.0, 0.1, 1.0)
    config.experiment.lambda_criterion = criterion
    scores = {0.0: float("nan"), 0.1: 0.7, 1.0: 0.8}
    monkeypatch.setattr(
        experiment, "_validation_score", lambda root, cell, c: scores[cell.entropy_weight]
    )
    lam, seen = experiment.choose_lambda(config, "/nowhere", 0, 0)
    assert lam == expected and seen == scores


def test_an_undefined_validation_auc_reads_as_nan(tmp_path):
    """The metric writer logs an undefined mean AUC as null: the λ choice reads it as NaN
    (which it never chooses), instead of failing on float(None)."""
    config = grid_config()
    cell = experiment.cells(config)[0]
    w = experiment.cell_workdir(tmp_path, cell)
    (w / "eval").mkdir(parents=True)
    (w / "eval" / "metrics.json").write_text(json.dumps({"step": 4}))
    rows = [{"step": 4, "val/mean_auc": None, "val/bce": 0.5}, {"step": 8, "val/bce": 0.4}]
    (w / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert np.isnan(experiment._validation_score(tmp_path, cell, "mean_auc"))
    assert experiment._validation_score(tmp_path, cell, "bce") == 0.5


def test_an_evaluation_the_report_cannot_read_is_refused():
    """The report reads each cell's eval/ (test split, best checkpoint): another split,
    checkpoint or output folder would leave every cell 'not done' forever."""
    for field, value in [("split", "validation"), ("checkpoint", "latest"), ("output_name", "x")]:
        config = grid_config()
        config.eval[field] = value
        with pytest.raises(config_lib.ConfigError, match=rf"config\.eval\.{field}="):
            experiment.check(config)
    experiment.check(grid_config())  # the defaults pass
