"""Training on several data sets (config.data.mixture): the NIH-layout and MIMIC-CXR-layout
phantom exports prepared and mixed. MIMIC-CXR has no Infiltration, Mass or Nodule: those
labels are masked on its examples (the loss ignores them), the sets are drawn in the
weights' shares, split by patient within each set, and scored per set and pooled; and a
model trained on MIMIC-CXR's phantoms is scored on NIH's through the label space."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from sklearn.metrics import roc_auc_score

import chestattn_jax
from chestattn_jax import config as config_lib
from chestattn_jax import validation
from chestattn_jax.data import mixture
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.export import export_nih
from chestattn_jax.data.export_csv_sets import export_mimic_cxr, export_padchest
from chestattn_jax.data.input_pipeline import create_source, train_dataset
from chestattn_jax.data.synthetic import PhantomConfig
from chestattn_jax.losses import regularized_loss

SIZE = 32
PHANTOMS = PhantomConfig(image_size=48, prevalence_scale=2.0)
# tiny_config's five classes, NIH's spellings; MIMIC-CXR spells the first two its way and
# lacks the other three.
CLASSES = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule")
IN_MIMIC = ("Atelectasis", "Pleural Effusion", None, None, None)
LACKING = [2, 3, 4]
PADCHEST_SPELLINGS = ("atelectasis", "pleural effusion", "infiltrates", "mass", "nodule")


def mixed_config(nih_dir, mimic_dir, **train):
    config = tiny_config(**train)
    config.data.synthetic = config_lib.get_base_config().data.synthetic  # read by nothing
    config.data.name = "nih"
    config.data.mixture = f"nih:{nih_dir},mimic_cxr:{mimic_dir}"
    config.data.classes = CLASSES
    config.loss.class_weights = "none"  # a small export: some classes lack positives
    return config


def single(config, name, data_dir, classes, split=None):
    """The config of one data set alone, as a user would write it."""
    one = config.copy_and_resolve_references()
    one.data.mixture, one.data.mixture_weights, one.data.mixture_splits = "", (), ()
    one.data.name, one.data.data_dir, one.data.classes = name, data_dir, tuple(classes)
    one.data.split = split or one.data.split
    return one


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    export_nih(str(root / "nih_raw"), 120, seed=0, config=PHANTOMS)
    prep.prepare("nih", str(root / "nih_raw"), str(root / "nih"), SIZE)
    export_mimic_cxr(str(root / "mimic_raw"), 90, seed=5, config=PHANTOMS)
    prep.prepare("mimic_cxr", str(root / "mimic_raw"), str(root / "mimic"), SIZE)
    export_padchest(str(root / "pad_raw"), 45, seed=9, config=PHANTOMS)
    prep.prepare("padchest", str(root / "pad_raw"), str(root / "pad"), SIZE)
    return root, str(root / "nih"), str(root / "mimic")


# ------------------------------------------------------------------------- config rules


def test_classes_resolve_per_set_through_the_label_space():
    assert mixture.resolve(CLASSES, "nih", "mimic_cxr") == IN_MIMIC
    assert mixture.resolve(CLASSES, "nih", "nih") == CLASSES
    # Canonical findings, or another set's spellings through config.data.name.
    assert mixture.resolve(("Pleural Effusion", "Edema"), "nih", "padchest") == (
        "pleural effusion",
        "pulmonary edema",
    )
    assert mixture.resolve(("pleural effusion", "hiatal hernia"), "padchest", "nih") == (
        "Effusion",
        "Hernia",
    )


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"mixture": "nih:/a,vindr:/b"}, "data.mixture", "names no prepared data set 'vindr'"),
        ({"mixture": "nih:/a,mimic_cxr"}, "data.mixture", "'mimic_cxr' is not NAME:DIR"),
        ({"mixture": "nih:/a,nih:/b"}, "data.mixture", "names nih more than once"),
        ({"classes": ("Effusion", "Support Devices")}, "data.classes", "'Support Devices'"),
        ({"classes": ("Effusion", "Tumour")}, "data.classes", "neither a label of nih"),
        ({"classes": ("Effusion", "Pleural Effusion")}, "data.classes", "more than once"),
        ({"mixture_weights": (1.0, 2.0, 3.0)}, "data.mixture_weights", "3 weights for the 2"),
        ({"mixture_weights": (1.0, 0.0)}, "data.mixture_weights", "greater than 0"),
        ({"mixture_weights": (1.0, -2.0)}, "data.mixture_weights", "greater than 0"),
        ({"mixture_splits": ("random",)}, "data.mixture_splits", "1 schemes for the 2"),
        ({"mixture_splits": ("random", "x")}, "data.mixture_splits", "no scheme 'x'"),
        ({"name": "chexpert"}, "data.name", "one of the mixture's data sets"),
        ({"data_dir": "/nih"}, "data.data_dir", "not read with a mixture"),
        ({"views": ("PA",)}, "data.views", "not read with a mixture"),
        ({"mixture_weights": (1, "a")}, "data.mixture_weights", "a tuple of numbers"),
    ],
)
def test_each_bad_mixture_setting_is_named_up_front(change, field, message):
    config = mixed_config("/nih", "/mimic")
    config.data.mixture = "nih:/nih,padchest:/pad"  # padchest: no Support Devices
    config.data.update(change)
    found = validation.problems(config, "train", num_devices=1)
    assert len(found) == 1 and found[0].startswith(f"config.{field}="), found
    assert message in found[0]


def test_a_good_mixture_validates_and_the_weights_need_a_mixture():
    config = mixed_config("/nih", "/mimic")
    config.data.mixture_weights, config.data.mixture_splits = (3.0, 1.0), ("random", "official")
    assert validation.problems(config, "train", num_devices=1) == []
    config.data.mixture = ""
    config.data.data_dir = "/nih"
    found = validation.problems(config, "train", num_devices=1)
    assert [f.split("=")[0] for f in found] == [
        "config.data.mixture_weights",
        "config.data.mixture_splits",
    ]


# ------------------------------------------------------------------ labels and sampling


def _rows(source):
    return [source[i] for i in range(len(source))]


def test_a_class_a_set_lacks_is_masked_never_negative(prepared):
    _, nih_dir, mimic_dir = prepared
    config = mixed_config(nih_dir, mimic_dir)
    source = create_source(config, "train")
    parts = source.dataset_rows()
    # Each set read alone, with its own spellings: the truth each row must carry.
    alone = {
        "nih": _rows(create_source(single(config, "nih", nih_dir, CLASSES), "train")),
        "mimic_cxr": _rows(
            create_source(single(config, "mimic_cxr", mimic_dir, IN_MIMIC[:2]), "train")
        ),
    }
    assert [len(parts[n]) for n in ("nih", "mimic_cxr")] == [len(alone[n]) for n in alone]
    for n, rows in parts.items():
        for i, truth in zip(rows, alone[n], strict=True):
            e = source[int(i)]
            np.testing.assert_array_equal(e["image"], truth["image"])
            if n == "nih":
                np.testing.assert_array_equal(e["labels"], truth["labels"])
                np.testing.assert_array_equal(e["mask"], truth["mask"])
            else:
                np.testing.assert_array_equal(e["labels"][:2], truth["labels"])
                np.testing.assert_array_equal(e["mask"][:2], truth["mask"])
                assert e["mask"][LACKING].tolist() == [0, 0, 0]
                assert e["labels"][LACKING].tolist() == [0, 0, 0]
    held = source.held.tolist()
    assert held == [[True] * 5, [True, True, False, False, False]]
    # Positives are counted where labelled only: NIH's for the classes MIMIC lacks.
    nih_pos = np.sum([t["labels"] * t["mask"] for t in alone["nih"]], axis=0)
    mimic_pos = np.sum([t["labels"] * t["mask"] for t in alone["mimic_cxr"]], axis=0)
    np.testing.assert_array_equal(source.positive_counts(), nih_pos + np.r_[mimic_pos, 0, 0, 0])
    # So are the examples inverse_frequency's N counts per class: MIMIC adds none where it
    # lacks the class.
    nih_known = np.sum([t["mask"] for t in alone["nih"]], axis=0)
    mimic_known = np.sum([t["mask"] for t in alone["mimic_cxr"]], axis=0)
    np.testing.assert_array_equal(source.labelled_counts(), nih_known + np.r_[mimic_known, 0, 0, 0])


def test_the_loss_ignores_the_masked_labels(prepared):
    _, nih_dir, mimic_dir = prepared
    config = mixed_config(nih_dir, mimic_dir)
    source = create_source(config, "train")
    batch = next(iter(train_dataset(source, batch_size=16, seed=1, shard=(0, 1))))
    masked = batch["mask"] == 0
    assert masked[:, LACKING].any(axis=1).sum() >= 2, "the batch should hold MIMIC rows"
    flipped = np.where(masked, 1 - batch["labels"], batch["labels"])
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    attention = jnp.asarray(rng.normal(size=(16, 5, 2, 2)), jnp.float32)
    weights = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])

    def loss(labels, logits, attention):
        return regularized_loss(logits, labels, batch["mask"], weights, attention, 0.5)[0]

    grad = jax.value_and_grad(loss, argnums=(1, 2))
    value, (g_logits, g_attention) = grad(batch["labels"], logits, attention)
    value_f, (g_logits_f, g_attention_f) = grad(flipped, logits, attention)
    assert float(value) == float(value_f)
    np.testing.assert_array_equal(g_logits, g_logits_f)
    np.testing.assert_array_equal(g_attention, g_attention_f)
    # An unmasked label flipped does change it: the comparison can fail.
    other = np.array(batch["labels"])
    other[~masked] = 1 - other[~masked]
    assert float(loss(other, logits, attention)) != pytest.approx(float(value))


def _draw_shares(source, batches: int, seed: int = 0) -> float:
    """The share of MIMIC-CXR's examples (mask 0 on the classes it lacks) in ``batches``
    training batches of 16."""
    it = iter(train_dataset(source, batch_size=16, seed=seed, shard=(0, 1)))
    drawn = np.concatenate([next(it)["mask"] for _ in range(batches)])
    return float(np.mean((drawn[:, LACKING] == 0).all(axis=1)))


def test_the_sets_are_drawn_in_the_weights_shares(prepared):
    _, nih_dir, mimic_dir = prepared
    config = mixed_config(nih_dir, mimic_dir)
    config.data.mixture_weights = (1.0, 3.0)
    source = create_source(config, "train")
    np.testing.assert_allclose(source.weights, [0.25, 0.75])
    assert _draw_shares(source, 40) == pytest.approx(0.75, abs=0.02)
    # The default: proportional to each set's training split.
    config.data.mixture_weights = ()
    source = create_source(config, "train")
    sizes = np.array([len(r) for r in source.dataset_rows().values()])
    np.testing.assert_allclose(source.weights, sizes / sizes.sum())
    assert _draw_shares(source, 40, seed=3) == pytest.approx(sizes[1] / sizes.sum(), abs=0.02)


def test_splits_are_each_sets_own_and_patient_disjoint(prepared):
    _, nih_dir, mimic_dir = prepared
    config = mixed_config(nih_dir, mimic_dir)
    config.data.mixture_splits = ("random", "official")
    by_split = {s: create_source(config, s) for s in ("train", "validation", "test")}
    for p, (name, data_dir, scheme, classes) in enumerate(
        [
            ("nih", nih_dir, "random", CLASSES),
            ("mimic_cxr", mimic_dir, "official", IN_MIMIC[:2]),
        ]
    ):
        patients = []
        for split, source in by_split.items():
            rows = source.dataset_rows()[name]
            assert (source.dataset_index[rows] == p).all()
            one = create_source(single(config, name, data_dir, classes, scheme), split)
            ids = [f"{name}:{e}" for e in one.example_ids]
            assert source.example_ids[rows].tolist() == ids
            patients.append(set(source.patient_ids[rows].tolist()))
            assert all(pid.startswith(f"{name}:") for pid in patients[-1])
        assert all(patients), f"{name}: every split should have patients"
        train, val, test = patients
        assert not (train & val) and not (train & test) and not (val & test)


# ---------------------------------------------------------------- training and scoring


def _sklearn_auc(labels, probs, mask):
    out = []
    for j in range(labels.shape[1]):
        keep = mask[:, j] > 0
        y = labels[keep, j]
        out.append(None if len(set(y.tolist())) < 2 else roc_auc_score(y, probs[keep, j]))
    return out


@pytest.mark.slow
def test_two_set_training_scores_each_set_and_both(prepared):
    from chestattn_jax import train

    root, nih_dir, mimic_dir = prepared
    config = mixed_config(nih_dir, mimic_dir, num_steps=6, eval_every_steps=6)
    # Those that read the source's ids, attributes and localisation truth (NIH's boxes).
    config.eval.evaluators = ("auc", "subgroups", "localization")
    validation.validate(config, "train", num_devices=1)
    metrics = train.train_and_evaluate(config, str(root / "w_mixed"))
    assert metrics["dataset"]["name"] == "nih+mimic_cxr"
    assert [d["name"] for d in metrics["dataset"]["datasets"]] == ["nih", "mimic_cxr"]
    with np.load(os.path.join(root, "w_mixed", "eval", "predictions.npz")) as z:
        probs, ids = z["probs"], z["example_ids"].astype(str)
    # The truth of each test image, from each set read alone.
    truth = {}
    for name, data_dir, classes in [
        ("nih", nih_dir, CLASSES),
        ("mimic_cxr", mimic_dir, IN_MIMIC[:2]),
    ]:
        one = create_source(single(config, name, data_dir, classes), "test")
        for i, key in enumerate(one.example_ids):
            e = one[i]
            labels, mask = np.zeros(5, int), np.zeros(5, int)
            labels[: len(classes)], mask[: len(classes)] = e["labels"], e["mask"]
            truth[f"{name}:{key}"] = (labels, mask)
    assert sorted(truth) == sorted(ids.tolist())
    labels = np.stack([truth[i][0] for i in ids])
    mask = np.stack([truth[i][1] for i in ids])
    # Pooled: the top-level scores.
    for c, want in zip(CLASSES, _sklearn_auc(labels, probs, mask), strict=True):
        assert metrics["auc"][c] == (None if want is None else pytest.approx(want, abs=1e-6))
    # Per set.
    assert set(metrics["per_dataset"]) == {"nih", "mimic_cxr"}
    for name, scores in metrics["per_dataset"].items():
        rows = np.char.startswith(ids, f"{name}:")
        assert scores["num_examples"] == int(rows.sum()) > 0
        want = _sklearn_auc(labels[rows], probs[rows], mask[rows])
        for c, w in zip(CLASSES, want, strict=True):
            assert scores["auc"][c] == (None if w is None else pytest.approx(w, abs=1e-6))
        lacking = [CLASSES[j] for j in LACKING] if name == "mimic_cxr" else []
        assert scores["masked_classes"] == lacking
    assert sum(s["num_examples"] for s in metrics["per_dataset"].values()) == len(ids)
    assert any(v is not None for v in metrics["per_dataset"]["mimic_cxr"]["auc"].values())
    # NIH's boxes reach the localisation evaluator through the mixture, under the model's
    # classes; the subgroups read the pooled attributes.
    assert sum(metrics["localization"]["pointing_game"]["count"].values()) > 0
    assert set(metrics["subgroups"]["attributes"]) >= {"sex", "view"}

    # Scored on a set outside the mixture (PadChest) through the label space: one data set
    # evaluated, no mixture left in it.
    from chestattn_jax import evaluation

    cross = config.copy_and_resolve_references()
    cross.eval.dataset, cross.eval.data_dir = "padchest", str(root / "pad")
    cross.eval.evaluators = ("auc",)
    validation.validate(cross, "evaluate", num_devices=1)
    scored = evaluation.evaluate(cross, str(root / "w_mixed"))
    assert scored["cross_dataset"]["class_map"] == dict(
        zip(CLASSES, PADCHEST_SPELLINGS, strict=True)
    )
    assert "per_dataset" not in scored
    pad = single(config, "padchest", str(root / "pad"), PADCHEST_SPELLINGS)
    assert scored["num_examples"] == len(create_source(pad, "test")) > 0
    # A set of the mixture is scored in per_dataset, not through eval.dataset.
    cross.eval.dataset, cross.eval.data_dir = "mimic_cxr", mimic_dir
    found = validation.problems(cross, "evaluate", num_devices=1)
    assert len(found) == 1 and found[0].startswith("config.eval.dataset='mimic_cxr'")


@pytest.mark.slow
def test_a_model_trained_on_mimic_is_scored_on_nih_through_the_label_space(prepared):
    from chestattn_jax import evaluation, train

    root, nih_dir, mimic_dir = prepared
    mimic_classes = ("Atelectasis", "Pleural Effusion", "Cardiomegaly", "Edema", "Consolidation")
    nih_classes = ("Atelectasis", "Effusion", "Cardiomegaly", "Edema", "Consolidation")
    config = tiny_config(num_steps=4, log_every_steps=2, eval_every_steps=4)
    config.data.synthetic = config_lib.get_base_config().data.synthetic
    config.data.name, config.data.data_dir = "mimic_cxr", mimic_dir
    config.data.classes = mimic_classes
    config.loss.class_weights = "none"
    config.eval.evaluators = ("auc",)
    workdir = str(root / "w_mimic")
    train.train(config, workdir)
    config.eval.dataset, config.eval.data_dir = "nih", nih_dir
    validation.validate(config, "evaluate", num_devices=1)
    metrics = evaluation.evaluate(config, workdir)
    assert metrics["cross_dataset"]["class_map"] == dict(
        zip(mimic_classes, nih_classes, strict=True)
    )
    # Directly: the NIH test images through the public API, against NIH's labels.
    source = create_source(single(config, "nih", nih_dir, nih_classes), "test")
    images = np.stack([source[i]["image"][..., 0] for i in range(len(source))])
    labels = np.stack([source[i]["labels"] for i in range(len(source))])
    mask = np.stack([source[i]["mask"] for i in range(len(source))])
    probs = chestattn_jax.load(workdir).predict(images)["probabilities"]
    want = _sklearn_auc(labels, probs, mask)
    for c, w in zip(mimic_classes, want, strict=True):
        assert metrics["auc"][c] == (None if w is None else pytest.approx(w, abs=1e-5))
    assert sum(w is not None for w in want) >= 3
