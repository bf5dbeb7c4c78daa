"""The experiment report over cells finished by hand (each with the files a finished cell
holds: its config, validation scores, test record, localisation findings and data set
fingerprint), so that every number has a known answer: the headline is the mean of the
per-fold AUCs with fold-stratified, seed-inclusive intervals, checked against sklearn on
explicitly resampled patients; the hit rates and their intervals against loops; and
cells that do not belong together are refused, naming the cell and the field."""

import json

import numpy as np
import pytest
from conftest import (
    HAND_BEST,
    HAND_IMAGES,
    HAND_PATIENTS,
    hand_finished,
    hand_fold_examples,
    hand_report_config,
    hand_write_cell,
    load_config,
    tiny_config,
)
from PIL import Image
from sklearn.metrics import roc_auc_score

from chestattn_jax import experiment
from chestattn_jax.evaluation.inference_pass import Record
from chestattn_jax.experiment import cli as experiment_cli
from chestattn_jax.metrics import fold_draw_weights, seed_draws

DRAWS = 40
PATIENTS, IMAGES = HAND_PATIENTS, HAND_IMAGES  # per fold: 48 test images
BEST = HAND_BEST
CLASSES = tiny_config().data.classes


def chosen(config, cells, fold, seed, variant):
    """The probs and findings the report must read for ``variant`` in ``fold``, ``seed``."""
    for cell, value in cells.items():
        if (cell.fold, cell.seed, cell.variant) == (fold, seed, variant) and (
            variant != "class" or cell.entropy_weight == BEST[(fold, seed)]
        ):
            return value
    raise AssertionError("no such cell")


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("report") / "root")
    config = hand_report_config()
    folds, cells = hand_finished(root, config)
    out = experiment.report(config, root, num_draws=DRAWS, seed=5)
    return config, root, folds, cells, out


def auc(y, p, w=None):
    return roc_auc_score(y, p, sample_weight=w)


def fold_auc(examples, probs, j, weights=None):
    keep = examples["mask"][:, j] > 0
    y = examples["labels"][keep, j]
    w = None if weights is None else weights[keep]
    if w is not None and len(set(y[w > 0])) < 2:
        return np.nan
    return auc(y, probs[keep, j], w)


def test_the_headline_is_the_mean_of_the_per_fold_aucs_with_seeds_inside(constructed):
    config, _, folds, cells, out = constructed
    seeds = (0, 1)
    for s in seeds:
        for f in range(2):
            assert out["seeds"][str(s)]["lambda"][str(f)]["lambda"] == BEST[(f, s)]
    combined = out["combined"]["fold_mean"]
    for v in ("resnet", "image", "class"):
        for j, c in enumerate(CLASSES):
            per_seed = [
                np.mean([fold_auc(folds[f], chosen(config, cells, f, s, v)[0], j) for f in (0, 1)])
                for s in seeds
            ]
            assert combined["aucs"][v]["classes"][c]["auc"] == pytest.approx(np.mean(per_seed))
            assert out["seeds"]["1"]["fold_mean"]["aucs"][v]["classes"][c]["auc"] == (
                pytest.approx(per_seed[1])
            )
    # The combined interval of one class, by explicit resampling: each draw picks the
    # seeds (with replacement) and each fold's patients; sklearn scores every fold with
    # its own model under the draw's weights.
    weights = fold_draw_weights([f["patient_ids"] for f in folds], DRAWS, 5)
    picks = seed_draws(2, DRAWS, 5)
    j, c = 1, CLASSES[1]
    for v in ("image", "class"):
        draws = []
        for d in range(DRAWS):
            draws.append(
                np.mean(
                    [
                        np.nanmean(
                            [
                                fold_auc(
                                    folds[f],
                                    chosen(config, cells, f, seeds[s], v)[0],
                                    j,
                                    weights[f][d],
                                )
                                for f in (0, 1)
                            ]
                        )
                        for s in picks[d]
                    ]
                )
            )
        low, high = np.quantile(draws, [0.025, 0.975])
        assert combined["aucs"][v]["classes"][c]["ci"] == pytest.approx([low, high], abs=1e-9)
        if v == "image":
            image_draws = np.asarray(draws)
    d = combined["differences"]["class - image"]["classes"][c]
    low, high = np.quantile(np.asarray(draws) - image_draws, [0.025, 0.975])
    assert d["ci"] == pytest.approx([low, high], abs=1e-9)
    assert "training seeds" in combined["aucs"]["class"]["covers"]
    # The pooled out-of-fold AUC stays, per seed, as a second figure.
    pooled = out["seeds"]["0"]["pooled"]["aucs"]["class"]["classes"][c]["auc"]
    probs = np.concatenate([chosen(config, cells, f, 0, "class")[0] for f in (0, 1)])
    both = {k: np.concatenate([f[k] for f in folds]) for k in ("labels", "mask")}
    keep = both["mask"][:, j] > 0
    assert pooled == pytest.approx(auc(both["labels"][keep, j], probs[keep, j]))


def test_hit_rates_are_weighted_by_findings_with_intervals(constructed):
    config, _, _, cells, out = constructed
    loc = out["combined"]["localization"]
    assert loc["headline"] == "pixel_hit"
    for v in ("image", "class"):
        for j, c in enumerate(CLASSES):
            per_seed = []
            for s in (0, 1):
                tables = [chosen(config, cells, f, s, v)[1]["model"] for f in (0, 1)]
                hits = np.concatenate([t.values["pixel_hit"][t.class_index == j] for t in tables])
                per_seed.append(hits.mean())  # pooled over folds: weighted by findings
            got = loc["rates"][v]["pixel_hit"]["classes"][c]
            assert got["rate"] == pytest.approx(np.mean(per_seed))
            assert got["ci"][0] <= got["rate"] <= got["ci"][1]
    prior = loc["rates"]["class_prior"]["pixel_hit"]["mean_rate"]
    diff = loc["differences"]["class - class_prior"]["pixel_hit"]["mean"]
    assert diff["difference"] == pytest.approx(
        loc["rates"]["class"]["pixel_hit"]["mean_rate"] - prior
    )
    assert "class - image" in loc["differences"]
    # Each seed's tables have their own, every hit rate with an interval.
    assert out["seeds"]["0"]["localization"]["rates"]["class"]["cell_hit"]["mean_ci"] is not None


def test_the_tables_and_the_forest_plot(constructed):
    config, root, *_ = constructed
    report_dir = experiment.cell_workdir(root, experiment.cells(config)[0]).parent / "report"
    table = (report_dir / "table.md").read_text()
    assert table.startswith("## Mean of the per-fold test AUCs, 2 folds, training seeds 0, 1")
    assert "training seeds resampled with replacement" in table
    assert "Pooled out-of-fold test AUC, seed 0" in table and "## Training seed 1" in table
    assert "Headline localisation: the pointing game as cheXlocalize" in table
    assert "class prior built from" in table
    assert "λ chosen on validation (mean_auc), seed 0: fold 0: λ = 1, fold 1: λ = 0.1." in table
    csv = (report_dir / "table.csv").read_text().splitlines()
    header = "scope,figure,class,column,value,ci_low,ci_high,folds_positive,folds_defined"
    assert csv[0] == header
    assert any(line.startswith("combined,fold_mean,mean,class - image,") for line in csv)
    assert any(line.startswith("seed 1,pooled,Mass,image,") for line in csv)
    assert any(line.startswith("combined,pixel_hit,mean,class - class_prior,") for line in csv)
    json.loads((report_dir / "report.json").read_text())
    with Image.open(report_dir / "forest.png") as im:
        assert im.size[0] > 600 and im.size[1] > 200


def test_cells_that_do_not_belong_together_are_refused(tmp_path):
    config = hand_report_config(seeds=(0,))
    root = str(tmp_path / "root")
    hand_finished(root, config)
    grid = experiment.cells(config)
    experiment.report(config, root, num_draws=5)  # they do belong together
    # Another data set in one cell of fold 1.
    other = "sha256:" + "2" * 64
    (experiment.cell_workdir(root, grid[6]) / "dataset.json").write_text(
        json.dumps({"fingerprint": other})
    )
    with pytest.raises(ValueError, match=rf"{grid[6].name} \(dataset fingerprint: '{other}' ->"):
        experiment.report(config, root, num_draws=5)
    # Other test images in a fold.
    w = experiment.cell_workdir(root, grid[1]) / "eval" / "predictions.npz"
    record = Record.load(w)
    record.example_ids = np.roll(record.example_ids, 1)
    record.save(w)
    with pytest.raises(ValueError) as refused:  # every problem, in one refusal
        experiment.report(config, root, num_draws=5)
    assert f"{grid[6].name} (dataset fingerprint: '{other}' ->" in str(refused.value)
    assert f"{grid[1].name} was evaluated on another split than {grid[0].name}" in str(
        refused.value
    )
    # Written anyway with --allow_mismatch, the differences listed in it.
    out = experiment.report(config, root, num_draws=5, allow_mismatch=True)
    assert len(out["mismatches"]) == 2
    table = (experiment.cell_workdir(root, grid[0]).parent / "report" / "table.md").read_text()
    assert table.startswith("**Reported with --allow_mismatch")
    assert f"- {grid[6].name}: dataset fingerprint" in table
    # A cell finished under another data setting is named with the field.
    saved = json.loads((experiment.cell_workdir(root, grid[2]) / "config.json").read_text())
    saved["data"]["split_seed"] = 7
    (experiment.cell_workdir(root, grid[2]) / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=rf"{grid[2].name} \(data\.split_seed: 7 -> 0\)"):
        experiment.report(config, root, num_draws=5)
    # A fold missing a variant.
    (experiment.cell_workdir(root, grid[4]) / "eval" / "metrics.json").unlink()
    with pytest.raises(ValueError, match=rf"1 cells of .* are not finished: {grid[4].name}"):
        experiment.report(config, root, num_draws=5, allow_mismatch=True)


def test_prepared_cells_of_two_data_sets_or_sharing_test_images_are_refused(tmp_path):
    """Where the data set cannot be read (the report may run elsewhere), the cells are
    compared with each other: one data set for every cell of prepared data, and folds that
    never test an image twice."""
    config = load_config("nih")
    config.data.data_dir = str(tmp_path / "absent")
    config.data.classes = CLASSES
    config.experiment.folds = 2
    config.experiment.variants = ("resnet",)
    root = str(tmp_path / "root")
    rng = np.random.default_rng(0)
    same = hand_fold_examples(0, CLASSES, rng)  # both folds test the same images
    grid = experiment.cells(config)
    prints = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    for cell, fingerprint in zip(grid, prints, strict=True):
        hand_write_cell(root, config, cell, same, rng, fingerprint)
    with pytest.raises(ValueError) as refused:
        experiment.report(config, root, num_draws=5)
    message = str(refused.value)
    assert f"{grid[1].name}: dataset fingerprint '{prints[1]}' against '{prints[0]}' of " in message
    assert f"{grid[1].name}: 48 test images of fold 1 are also tested in fold 0" in message


def test_allow_mismatch_belongs_to_the_report():
    problem = experiment_cli.ignored_flags(allow_mismatch=True)
    assert problem.startswith("--allow_mismatch cannot be given with a run")
    assert experiment_cli.ignored_flags(report=True, allow_mismatch=True) is None
