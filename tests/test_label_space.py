"""The label space: every data set's labels resolve, the same finding is the same across
sets, the maps between sets are one to one (or many to one with ``within``), cross-dataset
evaluation's class map is the label space's, and the docs page shows the module's table."""

from __future__ import annotations

import itertools
import pathlib
import re

import numpy as np
import pytest
from raw_fixtures import CHEXPERT_LABEL_COLUMNS, NIH_EXPERT_COLUMNS

from chestattn_jax.data import label_space
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.evaluation import class_map

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"

# Each set's labels as it distributes them (independent of the module's table).
CHEXPERT_14 = CHEXPERT_LABEL_COLUMNS
VINDR = (
    "Aortic enlargement, Atelectasis, Calcification, Cardiomegaly, Clavicle fracture, "
    "Consolidation, Edema, Emphysema, Enlarged PA, ILD, Infiltration, Lung Opacity, "
    "Lung cavity, Lung cyst, Mediastinal shift, Nodule/Mass, Pleural effusion, "
    "Pleural thickening, Pneumothorax, Pulmonary fibrosis, Rib fracture, Other lesion, "
    "COPD, Lung tumor, Pneumonia, Tuberculosis, Other diseases, No finding"
).split(", ")
PADCHEST = (
    "atelectasis, cardiomegaly, consolidation, pulmonary edema, pleural effusion, emphysema, "
    "pulmonary fibrosis, hiatal hernia, infiltrates, mass, nodule, pleural thickening, "
    "pneumonia, pneumothorax, alveolar pattern, interstitial pattern, "
    "costophrenic angle blunting, fracture, normal, multiple nodules"
).split(", ")
NIH_EXPERT = NIH_EXPERT_COLUMNS
CLASSES = {
    "nih": NIH_CLASSES,
    "chexpert": CHEXPERT_14,
    "mimic_cxr": CHEXPERT_14,
    "rsna_pneumonia": ("Lung Opacity",),
    "siim_pneumothorax": ("Pneumothorax",),
    "vindr_cxr": tuple(VINDR),
    "padchest": tuple(PADCHEST),
    "nih_expert": NIH_EXPERT,
}
# Spellings of one finding, written out by hand.
SAME = [
    {
        ("nih", "Effusion"),
        ("chexpert", "Pleural Effusion"),
        ("mimic_cxr", "Pleural Effusion"),
        ("vindr_cxr", "Pleural effusion"),
        ("padchest", "pleural effusion"),
    },
    {
        ("nih", "Pleural_Thickening"),
        ("vindr_cxr", "Pleural thickening"),
        ("padchest", "pleural thickening"),
    },
    {("nih", "Fibrosis"), ("vindr_cxr", "Pulmonary fibrosis"), ("padchest", "pulmonary fibrosis")},
    {("nih", "Edema"), ("chexpert", "Edema"), ("padchest", "pulmonary edema")},
    {("nih", "Pneumonia"), ("rsna_pneumonia", "Lung Opacity"), ("padchest", "pneumonia")},
    {
        ("nih", "Pneumothorax"),
        ("siim_pneumothorax", "Pneumothorax"),
        ("vindr_cxr", "Pneumothorax"),
        ("nih_expert", "Pneumothorax"),
    },
    {("nih", "Nodule"), ("padchest", "nodule"), ("padchest", "multiple nodules")},
    {("vindr_cxr", "Nodule/Mass"), ("nih_expert", "Nodule or mass")},
    {("chexpert", "No Finding"), ("vindr_cxr", "No finding"), ("padchest", "normal")},
]


def test_every_label_of_every_set_resolves_and_spellings_give_it_back():
    for dataset, classes in CLASSES.items():
        for name in classes:
            finding = label_space.canonical(dataset, name)
            assert finding in label_space.findings()
            spelled = label_space.spellings(finding)[dataset]
            assert label_space.canonical(dataset, spelled) == finding
    for finding in label_space.findings():
        for dataset, name in label_space.spellings(finding).items():
            assert label_space.canonical(dataset, name) == finding


def test_the_same_finding_is_one_canonical_and_different_ones_are_not():
    groups = [{label_space.canonical(d, n) for d, n in group} for group in SAME]
    assert all(len(g) == 1 for g in groups)
    assert len({next(iter(g)) for g in groups}) == len(groups)
    # The same spelling, two findings: RSNA's Lung Opacity is not CheXpert's.
    assert label_space.canonical("rsna_pneumonia", "Lung Opacity") != label_space.canonical(
        "chexpert", "Lung Opacity"
    )
    assert label_space.canonical("padchest", "costophrenic angle blunting") != (
        label_space.canonical("padchest", "pleural effusion")
    )


def test_unknown_data_sets_and_labels_are_named():
    with pytest.raises(ValueError, match=r"padchest has no label 'pleural effusions'"):
        label_space.canonical("padchest", "pleural effusions")
    with pytest.raises(ValueError, match=r"Unknown data set 'nihh'.*nih, chexpert"):
        label_space.canonical("nihh", "Effusion")
    with pytest.raises(ValueError, match=r"'Effusion' is not a canonical finding"):
        label_space.spellings("Effusion")


def _brute_force_pairs(a, a_classes, b, b_classes):
    """One to one by finding, by hand: a finding a list spells twice is stood for by the
    data set's own spelling of it."""
    out = {}
    for x in a_classes:
        fx = label_space.canonical(a, x)
        if any(label_space.canonical(a, o) == fx for o in a_classes if o != x) and (
            label_space.spellings(fx).get(a) != x
        ):
            continue
        ys = [y for y in b_classes if label_space.canonical(b, y) == fx]
        own = [y for y in ys if label_space.spellings(fx).get(b) == y]
        if ys:
            out[x] = (own or ys)[0]
    return out


def test_mapping_pairs_every_two_sets_one_to_one_both_ways():
    for a, b in itertools.permutations(CLASSES, 2):
        forward = label_space.mapping(a, CLASSES[a], b, CLASSES[b])
        assert forward == _brute_force_pairs(a, CLASSES[a], b, CLASSES[b]), (a, b)
        assert len(set(forward.values())) == len(forward)
        back = label_space.mapping(b, CLASSES[b], a, CLASSES[a])
        assert back == {y: x for x, y in forward.items()}, (a, b)
        # Cross-dataset evaluation's exact class map is the label space's.
        exact = class_map.parse("exact", CLASSES[a], CLASSES[b], a, b) if forward else []
        assert exact == list(forward.items())
    assert label_space.mapping("nih", NIH_CLASSES, "rsna_pneumonia", ("Lung Opacity",)) == {
        "Pneumonia": "Lung Opacity"
    }
    # A synonym stands for its finding only where the list lacks the set's own spelling.
    both = ["multiple nodules", "nodule"]
    assert label_space.mapping("padchest", both, "nih", NIH_CLASSES) == {"nodule": "Nodule"}
    assert label_space.mapping("padchest", both[:1], "nih", NIH_CLASSES) == {
        "multiple nodules": "Nodule"
    }


def test_within_scores_a_finding_against_a_broader_one():
    onto_vindr = label_space.mapping("nih", NIH_CLASSES, "vindr_cxr", VINDR, within=True)
    assert onto_vindr["Nodule"] == onto_vindr["Mass"] == "Nodule/Mass"
    assert "Nodule" not in label_space.mapping("nih", NIH_CLASSES, "vindr_cxr", VINDR)
    onto_expert = label_space.mapping("nih", NIH_CLASSES, "nih_expert", NIH_EXPERT, within=True)
    assert onto_expert == {
        "Consolidation": "Airspace opacity",
        "Mass": "Nodule or mass",
        "Nodule": "Nodule or mass",
        "Pneumothorax": "Pneumothorax",
    }
    # Several broader findings: the first the target has.
    assert label_space.within("Nodule") == ("Nodule/Mass", "Lung Lesion")
    assert label_space.mapping("nih", ["Nodule"], "chexpert", CHEXPERT_14, within=True) == {
        "Nodule": "Lung Lesion"
    }


def test_the_class_map_keeps_nih_and_chexpert_and_names_related_pairs():
    # Without data set names (the phantoms' NIH names), as before the label space.
    assert class_map.parse("exact", NIH_CLASSES, CHEXPERT_CLASSES) == class_map.parse(
        "exact", NIH_CLASSES, CHEXPERT_CLASSES, "nih", "chexpert"
    )
    with pytest.raises(ValueError, match=r"pairs no class") as e:
        class_map.parse("exact", ["Nodule", "Mass"], VINDR, "nih", "vindr_cxr")
    assert "Nodule=Nodule/Mass (Nodule falls within Nodule/Mass)" in str(e.value)
    named = class_map.parse("exact,Nodule=Nodule/Mass", NIH_CLASSES, VINDR, "nih", "vindr_cxr")
    expected = label_space.mapping("nih", NIH_CLASSES, "vindr_cxr", VINDR) | {
        "Nodule": "Nodule/Mass"
    }
    assert named == [(c, expected[c]) for c in NIH_CLASSES if c in expected]


def _generated(page: str, what: str) -> str:
    m = re.search(rf"<!-- generated: [^\n]*{what}[^\n]*-->\n(.*?)<!-- end of the", page, re.S)
    assert m, f"docs/labels.md has no generated {what} block"
    return m.group(1)


def test_the_docs_page_shows_the_modules_table_and_choices():
    page = (DOCS / "labels.md").read_text(encoding="utf-8")
    assert _generated(page, "markdown_table") == label_space.markdown_table()
    assert _generated(page, "markdown_choices") == label_space.markdown_choices()
    # Every finding a row, every data set a column.
    rows = label_space.markdown_table().splitlines()[2:]
    assert [re.match(r"\| \*\*(.*?)\*\*", r).group(1) for r in rows] == list(label_space.findings())
    assert all(f"(`{d}`)" in label_space.markdown_table() for d in label_space.DATASETS)


# --- NIH expert labels ----------------------------------------------------------------


def _record(ids, seed=0):
    from chestattn_jax.evaluation.inference_pass import Record

    rng = np.random.default_rng(seed)
    n, k = len(ids), len(NIH_CLASSES)
    return Record(
        probs=rng.random((n, k)),
        labels=rng.integers(0, 2, (n, k)),
        mask=np.ones((n, k), np.int32),
        patient_ids=np.asarray([i.split("_")[0] for i in ids]),
        example_ids=np.asarray(ids),
        classes=NIH_CLASSES,
        evaluated_as=NIH_CLASSES,
    )


def test_expert_labels_score_the_covered_images_as_sklearn_does(tmp_path):
    from raw_fixtures import write_nih_expert_labels
    from sklearn.metrics import roc_auc_score

    from chestattn_jax.evaluation import expert_labels

    split = [f"{p:08d}_{f:03d}.png" for p in range(1, 21) for f in range(2)]  # 40 images
    listed = split[::3] + split[1::3][:6] + ["00099999_000.png"]  # 20 of them, and one other
    path = tmp_path / "google2019_nih-chest-xray-labels.csv"
    truth = write_nih_expert_labels(path, listed, seed=3, blank=9)
    record = _record(split)
    out = expert_labels.expert_metrics(record, expert_labels.read_expert_labels(path))
    covered = [i for i, image in enumerate(split) if image in truth]
    assert out["images"] == len(covered) == 20 and out["split_images"] == 40
    assert out["file_images"] == 21
    assert out["class_map"] == {
        "Consolidation": "Airspace opacity",
        "Mass": "Nodule or mass",
        "Nodule": "Nodule or mass",
        "Pneumothorax": "Pneumothorax",
    }
    sets = [("test", "validation")[listed.index(split[i]) % 2] for i in covered]
    assert out["by_set_id"] == {s: sets.count(s) for s in set(sets)}
    for model_class, column in out["class_map"].items():
        rows = [i for i in covered if truth[split[i]][column] is not None]
        y = [truth[split[i]][column] for i in rows]
        p = record.probs[rows, NIH_CLASSES.index(model_class)]
        assert out["auc"][model_class] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert out["positives"][model_class] == sum(y)
        assert out["negatives"][model_class] == len(y) - sum(y)
        assert out["unlabelled"][model_class] == len(covered) - len(rows)
    assert out["unlabelled"]["Consolidation"] == 1  # the blank Airspace opacity
    assert "20 of the split's 40 images" in out["note"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace(",Pneumothorax,", ",Pneumothorax2,", 1), r"Pneumothorax"),
        (lambda t: t.replace(",YES,", ",MAYBE,", 1), r"line 2: 'MAYBE' in column"),
        (lambda t: t + t.splitlines()[1].replace("YES", "NO") + "\r\n", r"listed on line 2"),
        (lambda t: t.replace(",test\r\n", "\r\n", 1), r"line 2: 15 fields where the header has 16"),
    ],
)
def test_a_bad_expert_file_is_named_with_its_line(tmp_path, edit, message):
    from raw_fixtures import write_nih_expert_labels

    from chestattn_jax.data.raw import DataFormatError
    from chestattn_jax.evaluation import expert_labels

    path = tmp_path / "experts.csv"
    write_nih_expert_labels(path, [f"{p:08d}_000.png" for p in range(1, 10)])
    path.write_text(edit(path.read_bytes().decode()), newline="")
    with pytest.raises(DataFormatError, match=message) as e:
        expert_labels.read_expert_labels(path)
    assert str(path) in str(e.value)


def test_expert_labels_are_refused_off_nih_and_without_auc():
    from conftest import tiny_config

    from chestattn_jax import validation

    config = tiny_config("class")  # the phantoms
    config.eval.nih_expert_labels = "/x/google2019_nih-chest-xray-labels.csv"
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and "but the evaluated data set is 'synthetic'" in found[0]
    config.eval.evaluators = ("calibration",)
    found = validation.problems(config, "evaluate", num_devices=1)
    assert len(found) == 1 and "is read by the auc evaluator" in found[0]


def test_a_model_naming_canonical_findings_pairs_through_the_label_space():
    """A model trained on several sets may name its classes by canonical finding (not its
    home set's labels): they pair with another set's spellings of those findings."""
    from chestattn_jax.data import vindr_cxr
    from chestattn_jax.evaluation.class_map import exact_pairs

    model = ["Effusion", "Aortic Enlargement", "Lung Opacity", "Pleural Effusion"]
    got = exact_pairs(model, vindr_cxr.CLASSES, "nih", "vindr_cxr")
    assert got == {
        "Effusion": "Pleural effusion",  # NIH's own label, before the finding's name
        "Aortic Enlargement": "Aortic enlargement",
        "Lung Opacity": "Lung Opacity",
    }
