"""The failure-review evaluator: its streamed top-N against a brute-force selection from
the whole split, the definitions at the threshold, classes without one, the figure and
the report section. Numpy stand-ins for the model (no compile), and one evaluation of the
session's tiny run."""

from __future__ import annotations

import types

import numpy as np
import pytest

from chestattn_jax.evaluation import evaluators
from chestattn_jax.evaluation.evaluators import failures as failures_lib
from chestattn_jax.evaluation.inference_pass import Record
from chestattn_jax.operating_points import choose_thresholds
from chestattn_jax.reporting import html_report

CLASSES = ("Effusion", "Mass", "Nodule")
KINDS = ("false_positives", "false_negatives")


def _record(rng, n: int, classes=CLASSES, *, no_positives=()) -> Record:
    """Random probabilities rounded to two decimals (ties), labels, and some masked labels;
    classes in ``no_positives`` have none."""
    k = len(classes)
    labels = (rng.random((n, k)) < 0.35).astype(np.int32)
    for c in no_positives:
        labels[:, classes.index(c)] = 0
    probs = np.round(np.clip(0.3 * labels + 0.7 * rng.random((n, k)), 0, 1), 2)
    mask = (rng.random((n, k)) > 0.1).astype(np.int32)
    return Record(
        probs=probs,
        labels=labels,
        mask=mask,
        patient_ids=np.asarray([f"p{i // 2}" for i in range(n)]),
        example_ids=np.asarray([f"img{i:03d}.png" for i in range(n)]),
        classes=tuple(classes),
        evaluated_as=tuple(classes),
    )


def _context(tmp_path, validation, *, num=3, variant="class", rule="youden"):
    config = types.SimpleNamespace(
        eval=types.SimpleNamespace(operating_points=(rule,), num_failure_images=num),
        model=types.SimpleNamespace(variant=variant),
    )
    ctx = evaluators.Context(
        config, str(tmp_path), None, None, validation.classes, validation.evaluated_as
    )
    ctx.validation = validation
    return ctx


def _stream(evaluator, record, images, maps, batch: int = 16, seed: int = 0):
    """``record``'s rows in shuffled batches (as several processes interleave them), each
    padded with rows that would win every list if ``valid`` did not leave them out."""
    order = np.random.default_rng(seed).permutation(len(record))
    for start in range(0, len(order), batch):
        rows_ = order[start : start + batch]
        pad = batch - len(rows_)
        take = np.r_[rows_, np.zeros(pad, np.int64)]
        rows = {
            "image": images[take],
            "labels": record.labels[take].copy(),
            "mask": record.mask[take].copy(),
            "probs": record.probs[take].copy(),
            "valid": np.r_[np.ones(len(rows_), bool), np.zeros(pad, bool)],
            "index": take.copy(),
        }
        rows["mask"][len(rows_) :] = 1
        rows["labels"][len(rows_) :, 0] = 0
        rows["probs"][len(rows_) :, 0] = 1.0
        evaluator.add(None if maps is None else maps[take], rows)


def _brute_force(record, j: int, threshold: float, kind: str, n: int) -> tuple[list, int]:
    """The first ``n`` failures of class ``j`` of ``kind``, most confident first, and how
    many there are: a loop over every row."""
    found = []
    for i in range(len(record)):
        if not record.mask[i, j]:
            continue
        p, y = record.probs[i, j], record.labels[i, j]
        if kind == "false_positives" and y == 0 and p >= threshold:
            found.append((-p, i))
        elif kind == "false_negatives" and y == 1 and p < threshold:
            found.append((p, i))
    return [i for _, i in sorted(found)[:n]], len(found)


def _record_figures(monkeypatch) -> list:
    """Replaces the figure with a list of the rows it would draw (matplotlib is slow)."""
    from chestattn_jax.reporting import plots

    drawn = []
    monkeypatch.setattr(plots, "failure_review", lambda rows, n, path: drawn.append(rows))
    return drawn


@pytest.mark.parametrize("maps_kind", ["class", "image", None])
def test_streamed_failures_are_the_brute_force_ones(tmp_path, maps_kind, monkeypatch):
    rng = np.random.default_rng(1)
    test, validation = _record(rng, 150), _record(rng, 60, no_positives=("Nodule",))
    n, size = 3, 8
    # Each image and map carries its example's index (and the map its class), so that a
    # kept array can be traced back to the row it came from.
    images = np.broadcast_to(np.arange(150.0)[:, None, None, None], (150, size, size, 1))
    maps = {
        "class": np.arange(150)[:, None, None, None] * 10.0
        + np.arange(3)[None, :, None, None]
        + np.zeros((1, 1, 2, 2)),
        "image": np.arange(150)[:, None, None] * 10.0 + np.zeros((1, 2, 2)),
        None: None,
    }[maps_kind]
    ctx = _context(tmp_path, validation, num=n, variant="resnet" if maps_kind is None else "class")
    [evaluator] = evaluators.create(["failures"], ctx)
    drawn = _record_figures(monkeypatch) if maps_kind != "class" else None
    assert evaluator.needs_rows and evaluator.needs_validation
    assert evaluator.needs_maps == (maps_kind is not None)
    _stream(evaluator, test, images, maps)
    metrics = {"split": "test"}
    evaluator.finish(test, metrics)
    result = metrics["failures"]
    assert result["maps"] == maps_kind and result["rule"] == "youden"
    chosen = choose_thresholds(
        validation.labels, validation.probs, validation.mask, CLASSES, "youden"
    )
    for j, c in enumerate(CLASSES):
        entry, t = result["classes"][c], chosen[c]["threshold"]
        assert entry["threshold"] == t and entry["rule"] == "youden"
        if t is None:  # Nodule: no validation positives
            assert c == "Nodule" and "positive" in entry["reason"]
            assert entry["false_positives"] == entry["false_negatives"] == []
            assert entry["counts"] is None
            continue
        assert entry["reason"] is None
        for kind in KINDS:
            expected, total = _brute_force(test, j, t, kind, n)
            got = entry[kind]
            assert [ex["index"] for ex in got] == expected
            assert entry["counts"][kind] == total
            for ex in got:
                i = ex["index"]
                assert ex["example_id"] == f"img{i:03d}.png" and ex["patient_id"] == f"p{i // 2}"
                assert ex["prob"] == test.probs[i, j]
                assert ex["probs"] == dict(zip(CLASSES, test.probs[i].tolist(), strict=True))
                assert ex["findings"] == [
                    d for m, d in enumerate(CLASSES) if test.mask[i, m] and test.labels[i, m]
                ]
            kept = evaluator.kept[j][kind]
            assert len(kept.kept) <= n  # bounded: never more than n per class and kind
            for i, (image, m) in zip(kept.index, kept.kept, strict=True):
                assert image.shape == (size, size) and np.all(image == i)
                if maps_kind is None:
                    assert m is None
                else:
                    assert np.all(m == 10 * i + (j if maps_kind == "class" else 0))
    if drawn is None:
        assert (tmp_path / "failures.png").exists()
    else:  # the figure's rows: each class's failures, in order, with their own arrays
        [rows] = drawn
        assert [r["name"] for r in rows] == list(CLASSES)
        for row, entry in zip(rows, result["classes"].values(), strict=True):
            for kind in KINDS:
                assert len(row[kind]) == len(entry[kind])
                for panel, ex in zip(row[kind], entry[kind], strict=True):
                    assert (
                        np.all(panel["image"] == ex["index"]) and ex["example_id"] in panel["title"]
                    )
                    assert (panel["map"] is None) == (maps_kind is None)
        assert "reason" in rows[CLASSES.index("Nodule")]


def test_failures_at_the_threshold_and_a_class_without_one(tmp_path):
    """prob == threshold is a positive call (a false positive for a negative, not a false
    negative for a positive); a class whose validation split has no positive says so."""
    classes = ("Effusion", "Mass")
    validation = Record(
        probs=np.array([[0.1, 0.1], [0.2, 0.2], [0.6, 0.6], [0.7, 0.7]]),
        labels=np.array([[0, 0], [0, 0], [1, 0], [1, 0]]),
        mask=np.ones((4, 2), np.int32),
        patient_ids=np.arange(4).astype(str),
        example_ids=np.arange(4).astype(str),
        classes=classes,
        evaluated_as=classes,
    )
    test = Record(
        probs=np.array([[0.6, 0.9], [0.6, 0.1], [0.59, 0.5], [0.05, 0.5], [0.95, 0.5]]),
        labels=np.array([[0, 0], [1, 1], [1, 0], [0, 0], [0, 0]]),
        mask=np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0, 1]]),
        patient_ids=np.arange(5).astype(str),
        example_ids=np.array(["a", "b", "c", "d", "e"]),
        classes=classes,
        evaluated_as=classes,
    )
    [evaluator] = evaluators.create(["failures"], _context(tmp_path, validation, num=4))
    images = np.zeros((5, 32, 32, 1), np.uint8)
    _stream(evaluator, test, images, np.zeros((5, 2, 2, 2)), batch=4)
    metrics = {"split": "test"}
    evaluator.finish(test, metrics)
    effusion, mass = metrics["failures"]["classes"].values()
    assert effusion["threshold"] == 0.6
    # a (0.6, label 0) is a false positive; e (0.95) is masked; b (0.6, label 1) is found.
    assert [ex["example_id"] for ex in effusion["false_positives"]] == ["a"]
    assert [ex["example_id"] for ex in effusion["false_negatives"]] == ["c"]
    assert effusion["counts"] == {"false_positives": 1, "false_negatives": 1}
    assert mass["threshold"] is None and mass["reason"]
    assert mass["false_positives"] == mass["false_negatives"] == [] and mass["counts"] is None
    page = metrics["failures"]["page"]
    counts = page["tables"][0]["rows"]
    assert counts[1][0] == "Mass" and mass["reason"] in counts[1][-1]
    assert [r[:3] for r in page["tables"][1]["rows"]] == [
        ["Effusion", "FP", "a"],
        ["Effusion", "FN", "c"],
    ]
    # The page renders: the section, its figure and the checklist item it claims.
    from chestattn_jax.reporting.html_blocks import file_uri

    rendered = html_report.render(
        {"split": "test", "evaluators": ["failures"], **metrics},
        images={"failures.png": file_uri(tmp_path / "failures.png")},
    )
    section = rendered.split('<section id="failures">')[1].split("</section>")[0]
    assert "Not available" not in section and "failures.png" not in section
    assert "data:image/png;base64," in section and mass["reason"] in section
    checklist = rendered.split('<section id="checklist">')[1].split("</section>")[0]
    row = checklist.split("Failure analysis of incorrectly classified cases")[1].split("</tr>")[0]
    assert "answered" in row and 'href="#failures"' in row


def test_the_figure_decodes(tmp_path):
    from PIL import Image

    test_figure = tmp_path / "failures.png"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    row = {
        "name": "Effusion",
        "note": "t = 0.412; 12 FP, 3 FN",
        "false_positives": [
            {"image": image, "map": rng.random((2, 2)), "title": f"FP img{i}\np=0.9{i}"}
            for i in range(2)
        ],
        "false_negatives": [],
    }
    none = {"name": "Nodule", "note": "no threshold", "reason": "no validation positives"}
    from chestattn_jax.reporting import plots

    plots.failure_review([row, none], 2, str(test_figure))
    with Image.open(test_figure) as im:
        im.load()
        # Two rows of 2 + 2 panels: wider than high.
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
        assert np.asarray(im.convert("L")).std() > 10  # something is drawn


def test_off_with_zero_and_the_option_checked_once_the_config_has_it(tmp_path):
    from conftest import evaluator_option_problems

    from chestattn_jax import config as config_lib

    rng = np.random.default_rng(2)
    test, validation = _record(rng, 20), _record(rng, 20)
    [evaluator] = evaluators.create(["failures"], _context(tmp_path, validation, num=0))
    assert not evaluator.needs_rows and not evaluator.needs_maps
    metrics = {"split": "test"}
    evaluator.finish(test, metrics)
    assert "num_failure_images = 0" in metrics["failures"]["page"]["unavailable"]
    assert all(c["counts"] is not None for c in metrics["failures"]["classes"].values())
    assert not (tmp_path / "failures.png").exists()

    config = config_lib.get_base_config()

    def found(**fields):
        return evaluator_option_problems(failures_lib.Evaluator, config, **fields)

    if "num_failure_images" not in config.eval:
        assert found() == []  # optional until the config has it
        assert failures_lib.num_failure_images(config.eval) == failures_lib.DEFAULT_NUM
    assert found(num_failure_images=0) == []
    (problem,) = found(num_failure_images=-1)
    assert problem.startswith("config.eval.num_failure_images=-1: must be at least 0")


def test_the_pass_hands_rows_without_maps_to_evaluators_that_need_rows(tmp_path, monkeypatch):
    """run_pass with a stand-in step that returns no maps (the resnet variant's): on_batch
    gets maps None and rows with the mask; the evaluator keeps the source's own images."""
    from chestattn_jax import sharding as shd
    from chestattn_jax.data.synthetic import PhantomChestXray, PhantomConfig
    from chestattn_jax.evaluation.inference_pass import run_pass

    source = PhantomChestXray(size=11, split="test", seed=3, config=PhantomConfig(image_size=16))
    classes = tuple(source.classes)

    def eval_fn(state, batch):
        image = np.asarray(batch["image"], np.float64).mean(axis=(1, 2, 3))
        logits = (image[:, None] - 100.0) / 20.0 + np.arange(len(classes))[None, :] * 0.1
        return {"logits": logits, "loss": 0.0, "bce": 0.0}

    validation = run_pass(eval_fn, None, source, 4, shd.make_mesh(), classes=classes)
    [evaluator] = evaluators.create(
        ["failures"], _context(tmp_path, validation, num=2, variant="resnet")
    )
    seen, drawn = [], _record_figures(monkeypatch)

    def on_batch(maps, rows):
        seen.append((maps, sorted(rows)))
        evaluator.add(maps, rows)

    record = run_pass(eval_fn, None, source, 4, shd.make_mesh(), classes=classes, on_batch=on_batch)
    assert len(seen) == 3 and all(m is None for m, _ in seen)
    assert seen[0][1] == ["image", "index", "labels", "mask", "probs", "valid"]
    metrics = {"split": "test"}
    evaluator.finish(record, metrics)
    assert len(drawn) == 1
    for j, c in enumerate(classes):
        for kind in KINDS:
            entry = metrics["failures"]["classes"][c]
            for i, (image, m) in zip(
                evaluator.kept[j][kind].index, evaluator.kept[j][kind].kept, strict=True
            ):
                np.testing.assert_array_equal(image, source[int(i)]["image"][..., 0])
                assert m is None
            if entry["threshold"] is not None:
                expected, total = _brute_force(record, j, entry["threshold"], kind, 2)
                assert [ex["index"] for ex in entry[kind]] == expected
                assert entry["counts"][kind] == total


@pytest.mark.slow
def test_an_evaluation_reviews_the_failures_of_its_split(tiny_run, tmp_path):
    """The tiny run evaluated again with the failures evaluator alone (the compiled step
    of its own evaluation): the validation pass gives the thresholds, the maps come with
    the rows, and the figure and metrics are written."""
    import json

    from conftest import copy_workdir
    from PIL import Image

    from chestattn_jax import evaluation

    config, workdir = tiny_run
    workdir = copy_workdir(workdir, tmp_path / "w")
    config = config.copy_and_resolve_references()
    config.eval.output_name = "failures"
    config.eval.evaluators = ("failures",)
    metrics = evaluation.evaluate(config, str(workdir))
    out = workdir / "failures"
    record = Record.load(out / "predictions.npz")
    result = json.loads((out / "metrics.json").read_text())["failures"]
    assert result["maps"] == "class" and result["chosen_on"].startswith("validation split, 40")
    assert metrics["failures"]["classes"] == result["classes"]
    n = failures_lib.DEFAULT_NUM
    for j, c in enumerate(record.classes):
        entry = result["classes"][c]
        if entry["threshold"] is None:
            assert entry["reason"]
            continue
        for kind in KINDS:
            expected, total = _brute_force(record, j, entry["threshold"], kind, n)
            assert [ex["index"] for ex in entry[kind]] == expected
            assert entry["counts"][kind] == total
    with Image.open(out / "failures.png") as im:
        assert im.size[0] > 2 * n * 100  # 2n panels across
