"""The paper's experiment: a grid of cells run (and skipped once done), λ chosen on
validation, and Tables 1-2 pooled over folds, checked against direct computations."""

import json
import os

import numpy as np
import pytest
from conftest import load_config, tiny_config, tiny_flags
from sklearn.metrics import roc_auc_score

from chestattn_jax import experiment, validation
from chestattn_jax.config import get_base_config
from chestattn_jax.evaluation.inference_pass import Record
from chestattn_jax.evaluation.pipeline import EVALUATION_VERSION
from chestattn_jax.experiment import cell_results, grid
from chestattn_jax.experiment import cli as experiment_cli
from chestattn_jax.metrics import patient_draw_weights

DRAWS = 50


def grid_config():
    config = tiny_config("class", num_steps=4, eval_every_steps=4)
    config.loss.class_weights = "none"
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
        ("experiment.early_stopping_metric", "auc", "expected one of loss, bce, mean_auc"),
    ],
)
def test_experiment_fields_are_checked(field, value, message):
    """By the experiment's own rules (grid.check_config), which only the experiment
    command adds: python -m chestattn_jax.main does not read config.experiment."""
    config = grid_config()
    config.experiment[field.split(".")[1]] = value
    found = validation.problems(config, "train", num_devices=1, checks=(grid.check_config,))
    assert len(found) == 1 and found[0].startswith(f"config.{field}=") and message in found[0]
    assert validation.problems(config, "train", num_devices=1) == []
    with pytest.raises(validation.ConfigError, match=rf"config\.{field}="):
        experiment.check(config)


def test_cells_stop_on_a_criterion_free_of_the_entropy_term():
    """Every cell stops, and picks its best checkpoint, on experiment.early_stopping_metric
    (bce by default); with several λ, 'loss' (Eq. 5 with -λH, a different criterion in
    every λ cell) is refused unless allowed, and train.early_stopping_metric is the
    experiment's to set."""

    def problems(config):
        return validation.problems(config, "train", num_devices=1, checks=(grid.check_config,))

    config = grid_config()
    assert config.train.early_stopping_metric == "loss"  # a single run's default
    cell = experiment.cells(config)[0]
    assert experiment.cell_config(config, cell).train.early_stopping_metric == "bce"
    config.experiment.early_stopping_metric = "mean_auc"
    assert experiment.cell_config(config, cell).train.early_stopping_metric == "mean_auc"
    config.experiment.early_stopping_metric = "loss"
    assert problems(config) == []  # one λ: every cell stops on the same Eq. 5
    config.experiment.entropy_weights = (0.1, 1.0)
    (found,) = problems(config)
    assert found.startswith("config.experiment.early_stopping_metric='loss': Eq. 5's loss")
    assert "allow_loss_stopping=True" in found
    config.experiment.allow_loss_stopping = True
    assert problems(config) == []
    config.experiment.early_stopping_metric = "bce"
    config.train.early_stopping_metric = "mean_auc"
    (found,) = problems(config)
    assert found.startswith("config.train.early_stopping_metric='mean_auc': an experiment's")
    assert "config.experiment.early_stopping_metric" in found


def test_a_prepared_data_set_needs_two_folds_reported_with_every_other_problem():
    config = grid_config()
    config.data.name, config.data.data_dir = "nih", "/prepared"
    config.data.classes = ("Mass", "Nodule")
    config.data.synthetic = get_base_config().data.synthetic
    config.experiment.folds, config.eval.split = 1, "validation"
    found = validation.problems(config, "train", num_devices=1, checks=(grid.check_config,))
    assert "config.experiment.folds=1: a prepared data set is split into folds by patient" in (
        "\n".join(found)
    )
    assert any(f.startswith("config.eval.split='validation': an experiment cell") for f in found)


def trained_config():
    """:func:`grid_config` with two λ: the report chooses between real λ cells."""
    config = grid_config()
    config.experiment.entropy_weights = (0.1, 1.0)
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("experiment") / "root")
    config = trained_config()
    experiment.run(config, root)
    return config, root


@pytest.mark.slow
def test_every_cell_ran_and_a_second_run_skips_them(finished, monkeypatch):
    from chestattn_jax import train

    config, root = finished
    assert [experiment.status(root, c) for c in experiment.cells(config)] == ["done"] * 6
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: calls.append(a))
    experiment.run(config, root)
    assert calls == []  # finished cells are skipped
    experiment.run(config, root, "fold1-image-seed0")  # one named cell runs again
    assert len(calls) == 1 and calls[0][1].endswith("fold1-image-seed0")


def sklearn_auc(record, j, weights=None):
    keep = record.mask[:, j] > 0
    w = None if weights is None else weights[keep]
    return roc_auc_score(record.labels[keep, j], record.probs[keep, j], sample_weight=w)


@pytest.mark.slow
def test_report_of_trained_cells_matches_direct_computations(finished):
    """On trained cells: λ chosen per fold among the two real λ cells by their logged
    validation scores; the headline, the mean of the folds' AUCs; the pooled figure and its
    interval; the hit rates from the cells' findings."""
    from chestattn_jax.localization_metrics import load_findings

    config, root = finished
    out = experiment.report(config, root, num_draws=DRAWS, seed=3)
    r = out["seeds"]["0"]
    records, findings = {}, {}
    for fold in (0, 1):
        scores = {}
        for lam in (0.1, 1.0):
            w = os.path.join(root, f"fold{fold}-class-lam{lam:g}-seed0")
            with open(os.path.join(w, "eval", "metrics.json")) as f:
                step = json.load(f)["step"]
            with open(os.path.join(w, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f]
            scores[lam] = next(
                x["val/mean_auc"] for x in rows if x.get("step") == step and "val/mean_auc" in x
            )
        lam = r["lambda"][str(fold)]["lambda"]
        assert lam == max(sorted(scores), key=lambda k: scores[k])
        assert r["lambda"][str(fold)]["validation"] == {f"{k:g}": v for k, v in scores.items()}
        for v, name in (("image", "image"), ("class", f"class-lam{lam:g}")):
            eval_dir = os.path.join(root, f"fold{fold}-{name}-seed0", "eval")
            records.setdefault(v, []).append(Record.load(os.path.join(eval_dir, "predictions.npz")))
            loaded = load_findings(os.path.join(eval_dir, "localization.npz"))
            findings.setdefault(v, []).append(loaded["model"])
    classes = list(records["image"][0].classes)
    for v in ("image", "class"):
        for j, c in enumerate(classes):
            folds = [sklearn_auc(x, j) for x in records[v]]
            headline = r["fold_mean"]["aucs"][v]["classes"][c]
            assert headline["auc"] == pytest.approx(np.mean(folds), abs=1e-12)
            assert headline["ci"][0] <= headline["auc"] <= headline["ci"][1] or np.isnan(
                np.mean(folds)
            )
            assert [f["auc"][c] for f in r["per_fold"][v]] == pytest.approx(folds, abs=1e-12)
    # The pooled out-of-fold AUC, a second figure: one ROC, with its patient bootstrap.
    labels = np.concatenate([x.labels for x in records["image"]])
    mask = np.concatenate([x.mask for x in records["image"]])
    patients = np.concatenate(
        [[f"{f}/{p}" for p in x.patient_ids] for f, x in enumerate(records["image"])]
    )
    assert r["pooled"]["num_examples"] == len(labels) == 2 * 72
    weights = patient_draw_weights(patients, DRAWS, 3)
    probs = np.concatenate([x.probs for x in records["class"]])
    for j, c in enumerate(classes[:2]):
        keep = mask[:, j] > 0
        y, p = labels[keep, j], probs[keep, j]
        pooled = r["pooled"]["aucs"]["class"]["classes"][c]
        assert pooled["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        draws = [
            roc_auc_score(y, p, sample_weight=w[keep])
            for w in weights
            if len(set(y[w[keep] > 0])) == 2
        ]
        assert pooled["ci"] == pytest.approx(np.quantile(draws, [0.025, 0.975]), abs=1e-9)
    d = r["fold_mean"]["differences"]["class - image"]["classes"]
    for j, c in enumerate(classes):
        ups = [  # a tie (equal AUCs, up to sklearn's rounding) is not positive
            sklearn_auc(a, j) - sklearn_auc(b, j) > 1e-12
            for a, b in zip(records["class"], records["image"], strict=True)
        ]
        assert d[c]["folds_positive"] == sum(ups) and d[c]["folds_defined"] == 2
    # Localisation: every finding of both folds pooled, each model beside the class prior.
    loc = r["localization"]
    assert set(loc["rates"]) == {"image", "class", "class_prior", "uniform"}
    for v in ("image", "class"):
        for j, c in enumerate(classes):
            hits = np.concatenate([t.values["pixel_hit"][t.class_index == j] for t in findings[v]])
            rate = loc["rates"][v]["pixel_hit"]["classes"][c]
            assert rate["count"] == len(hits)
            assert rate["rate"] == (pytest.approx(hits.mean()) if len(hits) else None)
    report_dir = os.path.join(root, "report")
    assert {"table.md", "table.csv", "report.json", "forest.png"} <= set(os.listdir(report_dir))
    table = open(os.path.join(report_dir, "table.md")).read()
    assert table.startswith("## Mean of the per-fold test AUCs, 2 folds, training seed 0")
    assert "class - image" in table and "fold 0: λ = " in table
    assert "Pooled out-of-fold test AUC, seed 0" in table


@pytest.mark.slow
def test_report_refuses_unfinished_cells(finished, tmp_path):
    config, _ = finished
    with pytest.raises(ValueError, match=r"6 cells of .* are not finished: fold0-image-seed0"):
        experiment.report(config, str(tmp_path / "empty"))


def run_experiment(cli, root, config, *flags):
    """``python -m chestattn_jax.experiment`` on ``root`` with ``config`` as overrides."""
    return cli(
        f"--workdir={root}",
        *flags,
        *tiny_flags(config),
        module="chestattn_jax.experiment",
        timeout=300,
    )


@pytest.mark.slow
def test_the_command_line_lists_the_cells(finished, cli):
    config, root = finished
    proc = run_experiment(cli, root, config, "--list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6 and all("done" in line for line in lines)
    assert lines[1].split()[:2] == ["1", "fold0-class-lam0.1-seed0"]
    bad = run_experiment(cli, root, config, "--cell=99")
    assert bad.returncode != 0 and "FATAL: --cell='99' is not a cell" in bad.stderr


@pytest.mark.parametrize("criterion, expected", [("mean_auc", 1.0), ("bce", 0.1)])
def test_lambda_choice_never_takes_an_undefined_score(criterion, expected, monkeypatch):
    config = grid_config()
    config.experiment.entropy_weights = (0.0, 0.1, 1.0)
    config.experiment.lambda_criterion = criterion
    scores = {0.0: float("nan"), 0.1: 0.7, 1.0: 0.8}
    monkeypatch.setattr(
        cell_results, "_validation_score", lambda root, cell, c: scores[cell.entropy_weight]
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
    assert np.isnan(cell_results._validation_score(tmp_path, cell, "mean_auc"))
    assert cell_results._validation_score(tmp_path, cell, "bce") == 0.5


def test_an_evaluation_the_report_cannot_read_is_refused():
    """The report reads each cell's eval/ (test split, best checkpoint): another split,
    checkpoint or output folder would leave every cell 'not done' forever."""
    for field, value in [
        ("split", "validation"),
        ("checkpoint", "latest"),
        ("output_name", "x"),
        ("dataset", "chexpert"),  # another data set's test split: not this fold's patients
    ]:
        config = grid_config()
        config.eval[field] = value
        with pytest.raises(validation.ConfigError, match=rf"config\.eval\.{field}="):
            experiment.check(config)
    experiment.check(grid_config())  # the defaults pass


# ------------------------------------------------- finished cells under other settings


def finished_by_hand(root, config, cells=None):
    """``root`` with ``cells`` (default: all) finished as training writes them: the cell's
    config (``config.json``) and an evaluation (``eval/metrics.json``), nothing trained."""
    for cell in experiment.cells(config) if cells is None else cells:
        w = experiment.cell_workdir(root, cell)
        (w / "eval").mkdir(parents=True)
        (w / "config.json").write_text(experiment.cell_config(config, cell).to_json_best_effort())
        evaluated = {"step": 4, "version": EVALUATION_VERSION}
        (w / "eval" / "metrics.json").write_text(json.dumps(evaluated))


@pytest.fixture
def no_training(monkeypatch):
    """The workdirs ``train.train_and_evaluate`` was called on (nothing is trained)."""
    from chestattn_jax import train

    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda c, w: calls.append(w))
    return calls


def test_finished_cells_under_other_settings_are_refused_up_front(tmp_path, no_training):
    """A rerun with another train.num_steps used to skip every finished cell as done (and
    --report to read them): each changed cell is named with its fields, old -> new, before
    any cell runs, and the same for --cell and --report."""
    config = grid_config()
    root = str(tmp_path / "root")
    grid = experiment.cells(config)
    finished_by_hand(root, config, grid[1:])  # cell 0 is new: it would train first
    longer = grid_config()
    longer.train.num_steps = 8
    longer.loss.entropy_weight = 0.5  # not a λ of the grid's class cells, ignored by image's
    names = ", ".join(c.name for c in grid[1:])
    expected = (
        f"3 finished cells of {root} were trained or evaluated under other settings than this "
        f"config gives them: {names} (train.num_steps: 4 -> 8). Their results are not this "
        "config's: run the changed config in a new --workdir, or move those cells' folders "
        "away to train them again here."
    )
    for call in (
        lambda: experiment.run(longer, root),
        lambda: experiment.run(longer, root, "0"),
        lambda: experiment.run(longer, root, reevaluate=True),  # not an evaluation setting
    ):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == expected
    # Asked for fewer steps than the cells trained: --reevaluate must not evaluate them as
    # if they were these (training resumes past num_steps as a no-op).
    shorter = grid_config()
    shorter.train.num_steps = 2
    with pytest.raises(ValueError, match=r"\(train\.num_steps: 4 -> 2\)\. Their results"):
        experiment.run(shorter, root, reevaluate=True)
    assert no_training == []  # refused before anything ran
    finished_by_hand(root, config, grid[:1])
    with pytest.raises(ValueError, match=r"^4 finished cells .* \(train\.num_steps: 4 -> 8\)\."):
        experiment.report(longer, root)
    # Per cell: a cell with a change of its own is named with it.
    one = experiment.cell_workdir(root, grid[2]) / "config.json"
    saved = json.loads(one.read_text())
    saved["data"]["augment"]["rotation_deg"] = 3.0
    one.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"^1 finished cells .*: fold1-image-seed0 \(data\.augm"):
        experiment.run(config, root)
    assert no_training == []


def test_settings_that_only_change_how_a_cell_runs_do_not_count(tmp_path, no_training):
    """How the data is read, the evaluation batch, logging, checkpoints kept and the grid's
    own fields (other seeds, another λ criterion) leave a finished cell as it was: skipped,
    and reported; so does another mount of the same prepared data set."""
    config = grid_config()
    root = str(tmp_path / "root")
    finished_by_hand(root, config)
    moved = grid_config()
    moved.data.num_workers = 2
    moved.data.read_threads = 1
    moved.data.prefetch_batches = 2
    moved.eval.batch_size = 8
    moved.train.log_every_steps = 1
    moved.train.checkpoints_to_keep = 5
    moved.allow_setting_changes = True
    moved.experiment.lambda_criterion = "bce"
    moved.experiment.seeds = (0, 1)  # new cells; the seed-0 cells are the same
    experiment.run(moved, root)
    assert len(no_training) == 4 and all("seed1" in w for w in no_training)
    assert experiment.changed_cells(moved, root) == {}
    # A prepared data set elsewhere: its fingerprint, not its path, says whether it is the same.
    nih = load_config("nih")
    nih.data.data_dir = "/prepared"
    nih_root = str(tmp_path / "nih")
    finished_by_hand(nih_root, nih, experiment.cells(nih)[:2])
    nih.data.data_dir = "/mounted/elsewhere"
    assert experiment.changed_cells(nih, nih_root) == {}  # the data set cannot be read here
    nih.data.split_seed = 1
    assert experiment.changed_cells(nih, nih_root, fingerprints=False) == {
        c: {"data.split_seed": (0, 1)} for c in experiment.cells(nih)[:2]
    }


def test_a_cell_of_another_data_set_or_without_a_config_field_is_named(tmp_path):
    """A finished cell whose data set's fingerprint (dataset.json) differs with no field to
    explain it is named by that fingerprint; one whose config.json lacks a field this
    version writes is refused, naming the file and the field."""
    from chestattn_jax.data.input_pipeline import dataset_fingerprint

    config = grid_config()
    root = str(tmp_path / "root")
    cell = experiment.cells(config)[0]
    finished_by_hand(root, config, [cell])
    w = experiment.cell_workdir(root, cell)
    now = dataset_fingerprint(experiment.cell_config(config, cell))["fingerprint"]
    then = "sha256:" + "0" * 64
    (w / "dataset.json").write_text(json.dumps({"fingerprint": then}))
    with pytest.raises(ValueError, match=rf"{cell.name} \(dataset fingerprint: 'sha256:0"):
        experiment.run(config, root)
    assert experiment.changed_cells(config, root) == {cell: {"dataset fingerprint": (then, now)}}
    saved = json.loads((w / "config.json").read_text())
    del saved["data"]["synthetic"]["location_variability"]
    (w / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError) as raised:
        experiment.changed_cells(config, root)
    assert str(raised.value).startswith(
        f"{w / 'config.json'} has no field data.synthetic.location_variability: it was not "
    )
    # The grid's own section reaches a cell only through the fields cell_config sets: a
    # cell written before a field of it existed stands.
    saved = json.loads((w / "config.json").read_text())
    saved["data"]["synthetic"]["location_variability"] = config.data.synthetic.location_variability
    del saved["experiment"]["allow_loss_stopping"]
    (w / "config.json").write_text(json.dumps(saved))
    assert experiment.changed_cells(config, root, fingerprints=False) == {}


def test_started_cells_resume_and_a_finished_cell_without_its_config_is_refused(
    tmp_path, no_training
):
    config = grid_config()
    root = str(tmp_path / "root")
    grid = experiment.cells(config)
    finished_by_hand(root, config, grid[1:])
    w = experiment.cell_workdir(root, grid[0])
    (w / "checkpoints").mkdir(parents=True)
    (w / "config.json").write_text("{}")  # started under other settings: resumes, as before
    experiment.run(config, root)
    assert no_training == [os.fspath(w)]
    (experiment.cell_workdir(root, grid[3]) / "config.json").unlink()
    with pytest.raises(ValueError, match=rf"{grid[3].name} \(config\.json: missing"):
        experiment.run(config, root)


def test_an_evaluation_setting_newer_than_a_cell_is_evaluated_again(tmp_path, no_training):
    """A cell trained before an evaluation setting existed (its config.json lacks it) is
    not refused as another version: the setting counts as its evaluation recorded it, and
    where it recorded none, --reevaluate evaluates the cell again."""
    config = grid_config()
    root = str(tmp_path / "root")
    grid = experiment.cells(config)
    finished_by_hand(root, config)
    w = experiment.cell_workdir(root, grid[1])
    saved = json.loads((w / "config.json").read_text())
    del saved["eval"]["recalibration"]
    (w / "config.json").write_text(json.dumps(saved))
    assert experiment.changed_cells(config, root) == {
        grid[1]: {"eval.recalibration": (None, "platt")}
    }
    with pytest.raises(ValueError, match="--reevaluate evaluates them again"):
        experiment.run(config, root)
    experiment.run(config, root, reevaluate=True)
    assert no_training == [os.fspath(w)]
    evaluated = {"step": 4, "version": EVALUATION_VERSION}
    evaluated["settings"] = {"eval.recalibration": "platt"}  # as the new evaluation records it
    (w / "eval" / "metrics.json").write_text(json.dumps(evaluated))
    assert experiment.changed_cells(config, root) == {}
    del saved["data"]["image_size"]  # any other field: another version's cell
    (w / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"has no field data\.image_size"):
        experiment.changed_cells(config, root)


def test_a_cell_evaluated_by_an_earlier_release_is_evaluated_again(tmp_path, no_training):
    """An evaluation written before what evaluation computes changed (no ``version``, or
    an older one) is not reported beside newer ones: it is named, and --reevaluate
    evaluates it again; its training stands."""
    config = grid_config()
    root = str(tmp_path / "root")
    grid = experiment.cells(config)
    finished_by_hand(root, config)
    metrics = experiment.cell_workdir(root, grid[2]) / "eval" / "metrics.json"
    metrics.write_text(json.dumps({"step": 4}))
    assert experiment.changed_cells(config, root) == {
        grid[2]: {"evaluation version": (1, EVALUATION_VERSION)}
    }
    with pytest.raises(ValueError, match="were evaluated by an earlier release: --reevaluate"):
        experiment.run(config, root)
    with pytest.raises(ValueError, match=rf"{grid[2].name} \(evaluation version: 1 -> "):
        experiment.report(config, root)
    experiment.run(config, root, reevaluate=True)
    assert no_training == [os.fspath(experiment.cell_workdir(root, grid[2]))]


@pytest.mark.slow
def test_reevaluate_evaluates_again_only_cells_whose_evaluation_settings_changed(
    finished, tmp_path
):
    """--reevaluate: a finished cell whose only changes are eval.* fields is evaluated again
    (its training is the one asked for, so nothing trains); the others stay refused."""
    import shutil

    config, src = finished
    root = str(tmp_path / "root")
    shutil.copytree(src, root)
    grid = experiment.cells(config)
    w = experiment.cell_workdir(root, grid[0])
    steps = sorted(os.listdir(w / "checkpoints"))
    rows = (w / "metrics.jsonl").read_text()
    changed = trained_config()
    changed.eval.map_threshold = 0.3
    with pytest.raises(ValueError, match=r"eval\.map_threshold: 0\.5 -> 0\.3.*--reevaluate"):
        experiment.run(changed, root, grid[0].name)
    experiment.run(changed, root, grid[0].name, reevaluate=True)
    assert sorted(os.listdir(w / "checkpoints")) == steps  # nothing trained
    assert (w / "metrics.jsonl").read_text() == rows
    evaluated = json.loads((w / "eval" / "metrics.json").read_text())
    assert evaluated["settings"]["eval.map_threshold"] == 0.3
    assert set(experiment.changed_cells(changed, root)) == set(grid[1:])


# ------------------------------------------------------------------------- cell names


def test_cell_names_are_unique_and_name_lambda_exactly():
    """λ values that :g rounds (0.1 and 0.1000001) gave two cells one name and one workdir;
    values :g writes exactly keep today's names, so existing roots keep working."""
    config = grid_config()
    config.experiment.entropy_weights = (0, 0.1, 1, 0.1000001, 1e-7, 1234567.0, 2.5e-9)
    names = [c.name for c in experiment.cells(config) if c.fold == 0 and c.variant == "class"]
    assert names == [
        "fold0-class-lam0-seed0",
        "fold0-class-lam0.1-seed0",
        "fold0-class-lam1-seed0",
        "fold0-class-lam0.1000001-seed0",
        "fold0-class-lam1e-07-seed0",
        "fold0-class-lam1234567.0-seed0",
        "fold0-class-lam2.5e-09-seed0",
    ]
    assert len({c.name for c in experiment.cells(config)}) == len(experiment.cells(config))


@pytest.mark.slow
def test_the_command_line_lists_one_cell(finished, cli):
    """--cell with --list was ignored: every cell was listed."""
    config, root = finished
    proc = run_experiment(cli, root, config, "--list", "--cell=fold0-class-lam0.1-seed0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].split()[:3] == ["1", "fold0-class-lam0.1-seed0", "done"]


@pytest.mark.parametrize(
    "given, refused",
    [
        (dict(listing=True, report=True), "--report"),
        (dict(report=True, cell="3"), "--cell"),
        (dict(listing=True, reevaluate=True), "--reevaluate"),
        (dict(num_draws=10), "--num_draws"),
        (dict(listing=True, cell="3", num_draws=10), "--num_draws"),
    ],
)
def test_flags_a_command_would_ignore_are_refused(given, refused):
    message = experiment_cli.ignored_flags(**given)
    assert message.startswith(f"{refused} cannot be given with ")
    for fine in (dict(listing=True, cell="3"), dict(report=True, num_draws=10), dict(cell="3")):
        assert experiment_cli.ignored_flags(**fine) is None
