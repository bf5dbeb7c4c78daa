"""Cross-dataset evaluation: a model trained on the NIH-layout phantom export, scored on
the CheXpert-layout export through the class map, checked against a direct computation."""

import json
import os

import numpy as np
import pytest
from conftest import tiny_config, tiny_nih_config
from sklearn.metrics import roc_auc_score

import chestattn_jax
from chestattn_jax import validation
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.export import export_chexpert, export_nih
from chestattn_jax.data.input_pipeline import create_source
from chestattn_jax.data.synthetic import PhantomConfig
from chestattn_jax.evaluation import class_map

SIZE = 32
PHANTOMS = PhantomConfig(image_size=48, prevalence_scale=2.0)
EXACT_PAIRS = [
    ("Atelectasis", "Atelectasis"),
    ("Cardiomegaly", "Cardiomegaly"),
    ("Consolidation", "Consolidation"),
    ("Edema", "Edema"),
    ("Effusion", "Pleural Effusion"),
    ("Pneumonia", "Pneumonia"),
    ("Pneumothorax", "Pneumothorax"),
]


def test_exact_map_pairs_the_seven_shared_findings_both_ways():
    assert class_map.parse("exact", NIH_CLASSES, CHEXPERT_CLASSES) == EXACT_PAIRS
    back = class_map.parse("exact", CHEXPERT_CLASSES, NIH_CLASSES)
    assert sorted(back) == sorted((b, a) for a, b in EXACT_PAIRS)
    extended = class_map.parse("exact, Mass=Lung Lesion", NIH_CLASSES, CHEXPERT_CLASSES)
    assert ("Mass", "Lung Lesion") in extended and len(extended) == 8
    assert class_map.parse("Nodule=Lung Lesion", NIH_CLASSES, CHEXPERT_CLASSES) == [
        ("Nodule", "Lung Lesion")
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("Mass", "is not MODEL_CLASS=DATA_SET_CLASS"),
        ("Tumour=Lung Lesion", "'Tumour' is not a class of the model"),
        ("Mass=Lesion", "'Lesion' is not a class of the evaluated data set"),
        ("Mass=Lung Lesion,Nodule=Lung Lesion", "pairs Lung Lesion with more than one"),
        ("", "pairs no class"),
    ],
)
def test_a_bad_class_map_is_refused_naming_the_field(text, message):
    config = tiny_config("class")
    config.data.classes = NIH_CLASSES
    config.eval.dataset, config.eval.data_dir, config.eval.class_map = "chexpert", "/d", text
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and found[0].startswith("config.eval.class_map=")
    assert message in found[0]


def test_cross_dataset_fields_are_checked():
    config = tiny_config("class")
    config.eval.data_dir = "/somewhere"  # without eval.dataset: read by nothing
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and found[0].startswith("config.eval.data_dir=")
    config.eval.data_dir, config.eval.dataset = "", "padchest"
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and "config.eval.dataset='padchest'" in found[0]
    config.eval.dataset = "chexpert"  # and no data_dir
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and found[0].startswith("config.eval.data_dir=''")
    # Training reads no other data set.
    config.eval.data_dir = "/prepared"
    found = validation.problems(config, "train", num_devices=1)
    assert (
        len(found) == 1 and "config.eval.dataset='chexpert': is read by --mode=evaluate" in found[0]
    )
    # The prepared-data fields then describe the evaluated data set, also for a model
    # trained on the phantoms (which read none of them).
    config.data.split, config.data.uncertainty = "official", "ones"
    assert validation.problems(config, "evaluate", num_devices=1) == []
    config.data.data_dir = "/elsewhere"
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and "config.data.data_dir='/elsewhere': is not read" in found[0]


@pytest.fixture(scope="module")
def trained_on_nih(tmp_path_factory):
    """A tiny class-based model trained a few steps on the NIH-layout phantom export, and
    the CheXpert-layout export (other phantoms) prepared at the same size."""
    from chestattn_jax import train

    root = tmp_path_factory.mktemp("cross")
    export_nih(str(root / "nih_raw"), 150, seed=0, config=PHANTOMS)
    prep.prepare("nih", str(root / "nih_raw"), str(root / "nih"), SIZE)
    export_chexpert(str(root / "chexpert_raw"), 240, seed=7, config=PHANTOMS)
    prep.prepare("chexpert", str(root / "chexpert_raw"), str(root / "chexpert"), SIZE)
    config = tiny_nih_config(root / "nih", num_steps=6, eval_every_steps=6)
    workdir = str(root / "w")
    train.train_and_evaluate(config, workdir)
    return config, workdir, str(root / "chexpert")


@pytest.mark.slow
def test_scores_on_the_other_data_set_equal_a_direct_computation(trained_on_nih):
    from chestattn_jax import evaluation

    config, workdir, chexpert_dir = trained_on_nih
    config = config.copy_and_resolve_references()
    config.eval.dataset, config.eval.data_dir = "chexpert", chexpert_dir
    validation.validate(config, "evaluate", num_devices=1)
    metrics = evaluation.evaluate(config, workdir)

    out = os.path.join(workdir, "eval_chexpert_test_best")
    assert metrics["cross_dataset"]["class_map"] == dict(EXACT_PAIRS)
    assert list(metrics["auc"]) == [a for a, _ in EXACT_PAIRS]
    # Directly: the CheXpert test split's images through the public API, the mapped
    # model outputs against the CheXpert labels.
    target = config.copy_and_resolve_references()
    target.data.name, target.data.data_dir = "chexpert", chexpert_dir
    target.data.classes = tuple(b for _, b in EXACT_PAIRS)
    source = create_source(target, "test")
    assert metrics["num_examples"] == len(source) > 0
    images = np.stack([source[i]["image"][..., 0] for i in range(len(source))])
    labels = np.stack([source[i]["labels"] for i in range(len(source))])
    mask = np.stack([source[i]["mask"] for i in range(len(source))])
    probs = chestattn_jax.load(workdir).predict(images)["probabilities"]
    defined = 0
    for j, (model_class, _) in enumerate(EXACT_PAIRS):
        keep = mask[:, j] > 0
        y, p = labels[keep, j], probs[keep, NIH_CLASSES.index(model_class)]
        if len(set(y.tolist())) < 2:
            assert metrics["auc"][model_class] is None
            continue
        defined += 1
        assert metrics["auc"][model_class] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert defined >= 5, "the export should give most shared classes both labels"
    # The record lists the CheXpert images; the tables name the mapping.
    with np.load(os.path.join(out, "predictions.npz")) as z:
        assert list(z["example_ids"]) == list(source.example_ids)
        assert list(z["evaluated_as"]) == [b for _, b in EXACT_PAIRS]
    table = open(os.path.join(out, "per_class.md")).read()
    assert "Effusion = Pleural Effusion" in table and "through the class map 'exact'" in table
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["settings"]["eval.dataset"] == "chexpert"
    # The training evaluation is untouched.
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        assert len(json.load(f)["auc"]) == len(NIH_CLASSES)


@pytest.mark.slow
def test_another_class_map_gets_its_own_folder(trained_on_nih):
    from chestattn_jax import evaluation

    config, workdir, chexpert_dir = trained_on_nih
    config = config.copy_and_resolve_references()
    config.eval.dataset, config.eval.data_dir = "chexpert", chexpert_dir
    config.eval.class_map = "exact,Mass=Lung Lesion"
    config.eval.evaluators = ("tables", "auc")  # tables reads auc's metrics: run after it
    config.eval.bootstrap_draws = 0
    metrics = evaluation.evaluate(config, workdir)
    assert "Mass" in metrics["auc"] and len(metrics["auc"]) == 8
    folders = [f for f in os.listdir(workdir) if f.startswith("eval_chexpert_test_best_")]
    assert len(folders) == 1
    files = set(os.listdir(os.path.join(workdir, folders[0])))
    assert {"per_class.md", "metrics.json", "predictions.npz"} <= files
    assert "roc_curves.png" not in files  # only the evaluators asked for


@pytest.mark.slow
def test_an_unprepared_evaluated_data_set_is_named_before_anything_is_written(
    trained_on_nih, tmp_path
):
    from chestattn_jax import evaluation

    config, workdir, _ = trained_on_nih
    config = config.copy_and_resolve_references()
    config.eval.dataset, config.eval.data_dir = "chexpert", str(tmp_path / "none")
    before = sorted(os.listdir(workdir))
    with pytest.raises(FileNotFoundError, match=r"config.eval.dataset='chexpert'.*eval.data_dir"):
        evaluation.evaluate(config, workdir)
    assert sorted(os.listdir(workdir)) == before


@pytest.mark.slow
def test_the_evaluated_data_sets_label_policy_is_its_own(trained_on_nih):
    """NIH has no uncertain labels; CheXpert's are masked out under 'ignore'. Settings of
    the evaluated data set are not training settings: no refusal."""
    from chestattn_jax import evaluation

    config, workdir, chexpert_dir = trained_on_nih
    config = config.copy_and_resolve_references()
    config.eval.dataset, config.eval.data_dir = "chexpert", chexpert_dir
    config.data.uncertainty = "ignore"
    config.eval.evaluators, config.eval.bootstrap_draws = ("auc",), 0
    config.eval.output_name = "eval_chexpert_ignore"
    validation.validate(config, "evaluate", num_devices=1)
    metrics = evaluation.evaluate(config, workdir)
    assert metrics["settings"]["data.uncertainty"] == "ignore"
    assert "changed_from_training" not in metrics
    scored = [metrics["positives"][c] + metrics["negatives"][c] for c in metrics["auc"]]
    target = config.copy_and_resolve_references()
    target.eval.dataset = target.eval.data_dir = ""
    target.data.name, target.data.data_dir = "chexpert", chexpert_dir
    target.data.classes = tuple(b for _, b in EXACT_PAIRS)
    labelled = {}
    for policy in ("zeros", "ignore"):
        target.data.uncertainty = policy
        labelled[policy] = create_source(target, "test")._mask.sum(0).tolist()
    assert scored == labelled["ignore"]
    assert sum(labelled["ignore"]) < sum(labelled["zeros"]), "the export has uncertain labels"


@pytest.mark.slow
def test_the_trained_data_set_through_eval_dataset_keeps_the_training_split(trained_on_nih):
    """Issue 21 case 5: eval.dataset naming the data set trained on, with another split
    seed, scored training patients as "test" and recorded no change. It is the trained
    data set: the same rule as a normal evaluation (refused, or allowed and recorded)."""
    from chestattn_jax import evaluation

    config, workdir, _ = trained_on_nih
    config = config.copy_and_resolve_references()
    config.eval.dataset, config.eval.data_dir = "nih", config.data.data_dir
    config.data.split_seed = 1
    config.eval.evaluators, config.eval.bootstrap_draws = ("auc",), 0
    validation.validate(config, "evaluate", num_devices=1)
    before = sorted(os.listdir(workdir))
    with pytest.raises(
        ValueError, match=r"config\.data\.split_seed is 1 but the workdir was trained"
    ):
        evaluation.evaluate(config, workdir)
    assert sorted(os.listdir(workdir)) == before
    config.allow_setting_changes = True
    metrics = evaluation.evaluate(config, workdir)
    assert metrics["changed_from_training"]["data.split_seed"] == {"trained": 0, "evaluated": 1}


@pytest.mark.slow
def test_nih_expert_labels_score_the_test_images_they_cover(trained_on_nih, tmp_path):
    """config.eval.nih_expert_labels: the classes the expert file covers, scored against
    its labels on the test images it lists, equal sklearn on the model's predictions."""
    from raw_fixtures import write_nih_expert_labels

    from chestattn_jax import evaluation

    config, workdir, _ = trained_on_nih
    config = config.copy_and_resolve_references()
    source = create_source(config, "test")
    ids = [str(i) for i in source.example_ids]
    path = tmp_path / "google2019_nih-chest-xray-labels.csv"
    truth = write_nih_expert_labels(path, [*ids[::2], "00099999_000.png"], seed=1)
    config.eval.nih_expert_labels = str(path)
    config.eval.evaluators, config.eval.bootstrap_draws = ("auc",), 0
    config.eval.output_name = "eval_expert"
    validation.validate(config, "evaluate", num_devices=1)
    metrics = evaluation.evaluate(config, workdir)

    expert = metrics["expert_labels"]
    assert metrics["num_examples"] == len(ids)  # NIH's own labels, every test image
    rows = [i for i, e in enumerate(ids) if e in truth]
    assert expert["images"] == len(rows) == len(ids[::2]) > 0
    assert set(expert["class_map"]) == {"Consolidation", "Mass", "Nodule", "Pneumothorax"}
    images = np.stack([source[i]["image"][..., 0] for i in range(len(source))])
    probs = chestattn_jax.load(workdir).predict(images)["probabilities"]
    for model_class, column in expert["class_map"].items():
        y = [truth[ids[i]][column] for i in rows]
        p = probs[rows, NIH_CLASSES.index(model_class)]
        assert expert["auc"][model_class] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    with open(os.path.join(workdir, "eval_expert", "metrics.json")) as f:
        written = json.load(f)["expert_labels"]
    assert written["file"] == str(path) and written["images"] == len(rows)
