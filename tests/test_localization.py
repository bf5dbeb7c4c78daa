"""The pointing game and IoU / IoBB of thresholded maps."""

import numpy as np
import pytest

from chestattn_jax.localization_metrics import (
    argmax_cells,
    cell_hits,
    overlap_scores,
    pointing_game,
    region_overlap,
    upsample_map,
)


def test_argmax_cells_and_cell_hits():
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 2] = 1.0
    maps[1, 3, 0] = 1.0
    np.testing.assert_array_equal(argmax_cells(maps), [[1, 2], [3, 0]])
    mask = np.zeros((16, 16), bool)
    mask[5, 9] = True  # inside cell (1, 2) of a 4 x 4 grid of 4-px cells
    assert cell_hits((1, 2), (4, 4), mask)
    assert not cell_hits((1, 1), (4, 4), mask)


def test_pointing_game_per_class_and_shared_maps():
    n, k, h, s = 3, 2, 4, 16
    masks = np.zeros((n, k, s, s), bool)
    masks[:, 0, :4, :4] = True  # class 0 top-left
    masks[:, 1, 12:, 12:] = True  # class 1 bottom-right
    labels = np.array([[1, 1], [1, 0], [0, 1]])
    maps = np.zeros((n, k, h, h))
    maps[:, 0, 0, 0] = 1.0  # class 0 looks at its finding
    maps[:, 1, 0, 0] = 1.0  # class 1 looks at the wrong corner
    out = pointing_game(maps, masks, labels, ["a", "b"])
    assert out["hit_rate"] == {"a": 1.0, "b": 0.0}
    assert out["count"] == {"a": 2, "b": 2}
    assert out["mean_hit_rate"] == 0.5
    # One shared map (the image-based model) is scored against every present class.
    shared = pointing_game(maps[:, 0], masks, labels, ["a", "b"])
    assert shared["hit_rate"] == {"a": 1.0, "b": 0.0}
    none = pointing_game(maps, masks, np.zeros((n, k), int), ["a", "b"])
    assert none["hit_rate"] == {"a": None, "b": None} and none["mean_hit_rate"] is None


def test_region_overlap_iou_and_iobb():
    region = np.zeros((10, 10), bool)
    truth = np.zeros((10, 10), bool)
    region[:4, :5] = True  # 20 pixels
    truth[2:6, :5] = True  # 20 pixels, 10 shared
    iou, iobb = region_overlap(region, truth)
    assert iou == 10 / 30 and iobb == 10 / 20
    assert region_overlap(np.zeros_like(region), truth) == (0.0, 0.0)


def test_upsample_map_is_bilinear_and_max_normalised():
    m = np.array([[0.0, 2.0], [0.0, 0.0]], np.float32)
    up = upsample_map(m, 8)
    assert up.shape == (8, 8) and up.max() == 1.0
    assert up[:4, 4:].mean() > up[4:, :4].mean()  # the peak stays in its quadrant
    assert np.all(up >= 0)


def test_overlap_scores_thresholds_per_class():
    n, k, s = 2, 2, 16
    masks = np.zeros((n, k, s, s), bool)
    masks[:, 0, :8, :8] = True  # class 0: the top-left quadrant
    masks[:, 1, 14:, 14:] = True  # class 1: a small bottom-right corner
    labels = np.array([[1, 1], [1, 0]])
    maps = np.zeros((n, k, 2, 2), np.float32)
    maps[:, 0, 0, 0] = 1.0  # a 2 x 2 map: class 0 on its quadrant
    maps[:, 1] = 1.0  # class 1: flat, so the region is the whole image
    out = overlap_scores(maps, masks, labels, ["a", "b"], map_threshold=0.5)
    assert out["count"] == {"a": 2, "b": 1}
    # Flat map: region = everything; IoU = IoBB = 4 / 256.
    assert out["iou"]["b"] == pytest.approx(4 / 256) and out["iobb"]["b"] == pytest.approx(4 / 256)
    assert out["iou_accuracy"]["0.1"]["b"] == 0.0
    # The bilinear region around the peak cell overlaps the quadrant well.
    assert out["iou"]["a"] > 0.5 and out["iobb"]["a"] > 0.9
    assert out["iou_accuracy"]["0.5"]["a"] == 1.0
    assert out["mean_iou_accuracy"]["0.5"] == 0.5  # mean of a (1.0) and b (0.0)
    shared = overlap_scores(maps[:, 0], masks, labels, ["a", "b"])  # one map per image
    assert shared["iou"]["a"] == out["iou"]["a"] and shared["iou"]["b"] == 0.0


# ------------------------------------------------------------------ baselines


def test_cell_means_are_block_means():
    from chestattn_jax.localization_metrics import cell_means

    a = np.arange(64, dtype=float).reshape(8, 8)
    expected = a.reshape(4, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(cell_means(a, (4, 4)), expected)
    # Several maps at once, and a size the grid does not divide: cells of 2 or 3 rows.
    stack = np.stack([a[:7, :7], 2 * a[:7, :7]])
    out = cell_means(stack, (3, 3))
    np.testing.assert_allclose(out[1], 2 * out[0])
    np.testing.assert_allclose(out[0, 0, 0], a[:2, :2].mean())
    np.testing.assert_allclose(out[0, 2, 2], a[4:7, 4:7].mean())


def test_uniform_map_scores_a_random_cell_and_the_whole_image():
    from chestattn_jax.localization_metrics import LocalizationScores

    truth = np.zeros((1, 16, 16), bool)
    truth[0, 4:8, 4:12] = True  # exactly cells (1, 1) and (1, 2) of a 4 x 4 grid
    scores = LocalizationScores(["a"])
    scores.add_uniform((4, 4), truth, np.ones(1))
    assert scores.pointing_game()["hit_rate"]["a"] == pytest.approx(2 / 16)
    iou = scores.overlap()["iou"]["a"]
    assert iou == pytest.approx(32 / 256) and scores.overlap()["iobb"]["a"] == iou


def test_class_prior_is_the_mean_mask_and_leaves_an_image_out():
    from chestattn_jax.localization_metrics import ClassPrior

    s = 8
    first, second = np.zeros((2, s, s), bool), np.zeros((2, s, s), bool)
    first[0, :4, :4] = True  # class 0 top-left in one image, bottom-right in the other
    second[0, 4:, 4:] = True
    second[1, :, :2] = True  # class 1 only in the second image
    prior = ClassPrior(2)
    prior.add(first, np.array([1, 0]))
    prior.add(second, np.array([1, 1]))
    np.testing.assert_array_equal(prior.counts, [2, 1])
    maps = prior.maps((2, 2))
    np.testing.assert_allclose(maps[0], [[0.5, 0], [0, 0.5]])
    np.testing.assert_allclose(maps[1], [[0.5, 0], [0.5, 0]])
    # Scoring the first image: only the second image's class-0 mask is left.
    loo = prior.maps((2, 2), leave_out=first, leave_out_labels=np.array([1, 0]))
    np.testing.assert_allclose(loo[0], [[0, 0], [0, 1]])
    np.testing.assert_allclose(loo[1], maps[1])


def test_the_prior_wins_where_every_finding_lies_in_one_place():
    """A fixed location per class: the prior points at it every time, a uniform map seldom."""
    from chestattn_jax.localization_metrics import ClassPrior, LocalizationScores

    n, s = 6, 16
    masks = np.zeros((n, 2, s, s), bool)
    masks[:, 0, 1:3, 1:3] = True
    masks[:, 1, 12:15, 10:13] = True
    labels = np.ones((n, 2))
    prior = ClassPrior(2)
    for m, y in zip(masks, labels, strict=True):
        prior.add(m, y)
    on_prior, uniform = LocalizationScores(["a", "b"]), LocalizationScores(["a", "b"])
    for m, y in zip(masks, labels, strict=True):
        on_prior.add(prior.maps((4, 4), leave_out=m, leave_out_labels=y), m, y)
        uniform.add_uniform((4, 4), m, y)
    assert on_prior.pointing_game()["mean_hit_rate"] == 1.0
    assert uniform.pointing_game()["mean_hit_rate"] < 0.2


@pytest.mark.slow
def test_evaluation_reports_the_baselines_beside_the_model(tiny_run):
    import json

    from chestattn_jax.localization_metrics import load_findings

    _, workdir = tiny_run
    with open(workdir / "eval" / "metrics.json") as f:
        loc = json.load(f)["localization"]
    prior, uniform = loc["baselines"]["class_prior"], loc["baselines"]["uniform"]
    # The phantoms' training split has truth for every class: no leave-one-out.
    assert set(prior["built_from_class"].values()) == {"training split"}
    assert prior["built_from"] == "training split" and prior["images"] > 0
    for scores in (loc, prior, uniform):
        for game in ("pointing_game", "pointing_game_pixel"):
            assert scores[game]["count"] == loc["pointing_game"]["count"]
            assert 0 <= scores[game]["mean_hit_rate"] <= 1
    assert loc["headline"] == "pointing_game_pixel"
    # Per finding on disk, and intervals around the same rates.
    tables = load_findings(workdir / "eval" / "localization.npz")
    counts = np.bincount(tables["model"].class_index, minlength=len(loc["pointing_game"]["count"]))
    assert counts.tolist() == list(loc["pointing_game"]["count"].values())
    boot = loc["bootstrap"]
    assert set(boot["differences"]) == {"model - class_prior", "model - uniform"}
    for name, scores in (("model", loc), ("class_prior", prior), ("uniform", uniform)):
        pixel = boot["rates"][name]["pixel_hit"]
        assert pixel["mean_rate"] == pytest.approx(scores["pointing_game_pixel"]["mean_hit_rate"])
        low, high = pixel["mean_ci"]
        assert low <= pixel["mean_rate"] <= high
    table = (workdir / "eval" / "per_class.md").read_text()
    assert "prior hit rate" in table and "uniform hit rate" in table and "cell hit rate" in table


@pytest.mark.slow
def test_evaluation_passes_over_the_split_once(tiny_run, tmp_path, monkeypatch):
    """Logits, loss and maps come from one pass over the evaluated split (and one over
    validation, where thresholds and recalibration are fitted); the results are those of
    the run's own evaluation."""
    import json

    from conftest import copy_workdir

    from chestattn_jax import evaluation
    from chestattn_jax.evaluation import inference_pass as record

    config, workdir = tiny_run
    workdir = copy_workdir(workdir, tmp_path / "w")
    passes = []
    original = record.eval_batches

    def counted(source, batch_size):
        passes.append(len(source))
        return original(source, batch_size)

    monkeypatch.setattr(record, "eval_batches", counted)
    config = config.copy_and_resolve_references()
    config.eval.output_name = "again"
    again = evaluation.evaluate(config, str(workdir))
    # One pass per split: validation (thresholds, recalibration), then the evaluated one.
    assert passes == [again["validation_examples"], again["num_examples"]]
    with open(workdir / "eval" / "metrics.json") as f:
        before = json.load(f)
    assert again["auc"].keys() == before["auc"].keys()
    for c, v in before["auc"].items():
        assert (v is None and again["auc"][c] is None) or abs(again["auc"][c] - v) < 1e-6
    assert again["localization"]["pointing_game"] == before["localization"]["pointing_game"]


@pytest.mark.slow
def test_evaluation_reports_calibration_and_operating_points(tiny_run):
    """The default evaluation (the run this file's end-to-end tests share) chooses
    thresholds and fits a recalibration on the validation split, reports both on the test
    split, and writes them to thresholds.json; the recalibration changes no AUC."""
    import json

    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from chestattn_jax.calibration import apply_recalibration
    from chestattn_jax.evaluation.inference_pass import Record

    config, workdir = tiny_run
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert metrics["validation_examples"] == config.data.synthetic.validation_size
    cal = metrics["calibration"]
    assert cal["recalibration"]["method"] == "platt"
    record = Record.load(workdir / "eval" / "predictions.npz")
    after = apply_recalibration(record.probs, cal["recalibration"])
    for j, c in enumerate(record.classes):
        keep = record.mask[:, j] > 0
        y = record.labels[keep, j]
        if len(set(y)) == 2:
            assert roc_auc_score(y, after[keep, j]) == pytest.approx(
                roc_auc_score(y, record.probs[keep, j]), abs=1e-12
            )
            assert cal["before"]["classes"][c]["ece"]["value"] >= 0
    assert set(cal["reliability"]) <= set(record.classes)
    with Image.open(workdir / "eval" / "reliability.png") as im:
        assert im.size[0] > 300
    ops = metrics["operating_points"]
    assert set(ops["rules"]) == set(config.eval.operating_points)
    saved = json.loads((workdir / "eval" / "thresholds.json").read_text())
    assert saved["rule"] == "youden" and saved["recalibration"] == cal["recalibration"]
    youden = ops["rules"]["youden"]
    for c in record.classes:
        t = youden["validation"][c]["threshold"]
        assert saved["thresholds"][c] == t
        # No threshold without a reason, never a silent 0.5.
        assert (t is None) == (youden["validation"][c]["reason"] is not None)
        assert (t is None) == (c in saved["reasons"])
        if t is not None:
            j = record.classes.index(c)
            keep = record.mask[:, j] > 0
            called = record.probs[keep, j] >= t
            positives = record.labels[keep, j] == 1
            sensitivity = youden["test"]["classes"][c]["sensitivity"]["value"]
            if positives.any():
                assert sensitivity == pytest.approx(called[positives].mean())


def test_bad_operating_point_rules_are_refused_naming_the_field():
    from conftest import tiny_config

    from chestattn_jax import validation

    for rules, message in [
        (("youden", "sensitivity>=1.5"), "sensitivity>=1.5"),
        (("accuracy",), "accuracy"),
        ((), "non-empty"),
    ]:
        config = tiny_config()
        config.eval.operating_points = rules
        found = validation.problems(config, "train", num_devices=1)
        assert len(found) == 1 and found[0].startswith("config.eval.operating_points=")
        assert message in found[0]
    config = tiny_config()
    config.eval.recalibration = "isotonic"
    (found,) = validation.problems(config, "train", num_devices=1)
    assert found.startswith("config.eval.recalibration='isotonic': expected one of")


def test_cells_hit_is_cell_hits_of_every_cell():
    """The integral-image version agrees with the cell-by-cell one, also where the grid
    does not divide the image (cells then overlap by a pixel)."""
    from chestattn_jax.localization_metrics import cells_hit

    rng = np.random.default_rng(0)
    for size, h, w in [(16, 4, 4), (32, 3, 5), (31, 7, 4)]:
        for _ in range(10):
            mask = rng.random((size, size)) > 0.99
            expected = [[cell_hits((r, c), (h, w), mask) for c in range(w)] for r in range(h)]
            np.testing.assert_array_equal(cells_hit(mask, (h, w)), expected)


# ------------------------------------------------------------------ the pixel pointing game


def _bilinear(m, size):
    """``(h, w)`` -> ``(size, size)`` bilinear with half-pixel centres and clamped edges
    (torch's ``F.interpolate(mode="bilinear", align_corners=False)``, cheXlocalize's)."""
    m = np.asarray(m, np.float64)

    def axis(n):
        s = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        i0 = np.floor(s).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), s - i0

    y0, y1, fy = axis(m.shape[0])
    x0, x1, fx = axis(m.shape[1])
    rows = m[y0] * (1 - fy)[:, None] + m[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def _random_truth(rng, n, k, size):
    """``(n, k, size, size)`` masks of random rectangles, and labels (some absent)."""
    masks = np.zeros((n, k, size, size), bool)
    for t in range(n):
        for j in range(k):
            y, x = rng.integers(0, size - 4, 2)
            h, w = rng.integers(2, size // 2, 2)
            masks[t, j, y : y + h, x : x + w] = True
    return masks, (rng.random((n, k)) < 0.7).astype(int)


def test_pixel_pointing_game_is_the_argmax_of_the_bilinear_map():
    """Against an independent bilinear upsampling: a hit when the maximum pixel lies in the
    truth. Where the maximum cell is on the map's border, the clamped edge makes a plateau
    of maximal pixels: the hit is then the share of the plateau in the truth."""
    from chestattn_jax.localization_metrics import score_maps

    rng = np.random.default_rng(1)
    plateaus = 0
    for size, cells in [(96, 6), (32, 3), (31, 7)]:
        n, k = 12, 3
        masks, labels = _random_truth(rng, n, k, size)
        maps = rng.random((n, k, cells, cells)).astype(np.float32)
        f = score_maps(maps, masks, labels, ["a", "b", "c"]).findings()
        expected = []
        for t in range(n):
            for j in np.flatnonzero(labels[t]):
                up = _bilinear(maps[t, j], size)
                top = up == up.max()
                if top.sum() == 1:
                    y, x = np.unravel_index(np.argmax(up), up.shape)
                    hit = float(masks[t, j, y, x])
                else:
                    ys, xs = np.nonzero(top)
                    pixels = zip(ys, xs, strict=True)
                    hit = sum(float(masks[t, j, y, x]) for y, x in pixels) / len(ys)
                    plateaus += 1
                expected.append((t, j, hit))
        np.testing.assert_array_equal(f["example"], [e[0] for e in expected])
        np.testing.assert_array_equal(f["class"], [e[1] for e in expected])
        np.testing.assert_allclose(f["pixel_hit"], [e[2] for e in expected], rtol=0, atol=1e-15)
        assert 0 < f["pixel_hit"].mean() < 1  # both outcomes occur
    assert plateaus > 0


def test_uniform_and_flat_maps_score_the_truths_share_of_the_image():
    from chestattn_jax.localization_metrics import LocalizationScores, pixel_hit

    truth = np.zeros((1, 16, 16), bool)
    truth[0, 3:9, 4:12] = True  # 48 of 256 pixels
    uniform, flat = LocalizationScores(["a"]), LocalizationScores(["a"])
    uniform.add_uniform((4, 4), truth, np.ones(1))
    flat.add(np.ones((4, 4), np.float32), truth, np.ones(1))
    assert uniform.findings()["pixel_hit"][0] == 48 / 256
    assert flat.findings()["pixel_hit"][0] == 48 / 256  # every pixel ties at the maximum
    assert uniform.pointing_game(pixel=True)["hit_rate"]["a"] == 48 / 256
    # A plateau: the share of the tied maximal pixels inside the truth.
    up = np.zeros((4, 4))
    up[0, :2] = up[3, 3] = 1.0
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert pixel_hit(up, mask) == 1 / 3


# ------------------------------------------------------------------ findings and intervals


def _tables(rng, patients, k, names=("model", "prior"), examples_per_patient=2):
    """One fold's examples (``examples_per_patient`` each) and findings on some of them:
    ``(patient_ids, {name: FindingTable})`` with random values per source."""
    from chestattn_jax.localization_metrics import FINDING_FIELDS, FindingTable

    ids = np.repeat([f"p{p}" for p in patients], examples_per_patient)
    example, cls = [], []
    for e in range(len(ids)):
        for j in range(k):
            if rng.random() < 0.5:
                example.append(e)
                cls.append(j)
    example, cls = np.asarray(example, np.int64), np.asarray(cls, np.int64)
    tables = {}
    for name in names:
        values = {f: rng.random(len(cls)) for f in FINDING_FIELDS}
        values["pixel_hit"] = (values["pixel_hit"] < 0.5).astype(float)
        tables[name] = FindingTable(
            example_index=example,
            class_index=cls,
            example_ids=np.asarray([f"img{e}" for e in example]),
            patient_ids=ids[example],
            values=values,
            class_names=tuple("abc"[:k]),
            map_threshold=0.5,
        )
    return ids, tables


def _brute_rates(tables_by_fold, draws, d, column, k):
    """Rates per class in draw ``d``: every finding repeated as often as its patient was
    drawn in its fold, pooled over folds, then a plain mean per class."""
    values, classes = [], []
    for t, weights in zip(tables_by_fold, draws, strict=True):
        times = weights[d, t.example_index].astype(int)
        values += np.repeat(t.column(column), times).tolist()
        classes += np.repeat(t.class_index, times).tolist()
    values, classes = np.asarray(values), np.asarray(classes)
    return np.asarray(
        [values[classes == j].mean() if (classes == j).any() else np.nan for j in range(k)]
    )


def test_hit_rate_intervals_and_paired_differences_resample_patients_per_fold():
    from chestattn_jax.localization_metrics import bootstrap_findings, finding_rates
    from chestattn_jax.metrics import fold_draw_weights, seed_draws

    rng = np.random.default_rng(2)
    k, num_draws = 3, 40
    ids0, fold0 = _tables(rng, range(6), k)
    ids1, fold1 = _tables(rng, range(6, 10), k)  # a smaller fold: fewer findings, less weight
    folds = [ids0, ids1]
    draws = fold_draw_weights(folds, num_draws, seed=5)
    columns = ("pixel_hit", "iou@0.25")
    sources = {n: [[fold0[n], fold1[n]]] for n in ("model", "prior")}
    for column in columns:
        per_draw = {}
        for name in sources:
            point, rates = finding_rates(
                sources[name], draws, seed_draws(1, num_draws), columns, k
            )[column]
            brute = np.stack(
                [_brute_rates([fold0[name], fold1[name]], draws, d, column, k) for d in range(40)]
            )
            np.testing.assert_allclose(rates, brute, rtol=0, atol=1e-12)
            ones = [np.ones((1, len(folds[0]))), np.ones((1, len(folds[1])))]
            np.testing.assert_allclose(
                point, _brute_rates([fold0[name], fold1[name]], ones, 0, column, k), atol=1e-12
            )
            per_draw[name] = brute
        rates, diffs = bootstrap_findings(
            folds,
            sources,
            list("abc"),
            columns=columns,
            pairs=[("model", "prior")],
            num_draws=num_draws,
            seed=5,
            level=0.9,
        )
        model = rates["model"][column]
        for j, c in enumerate("abc"):
            expected = np.quantile(per_draw["model"][:, j], [0.05, 0.95])
            np.testing.assert_allclose(model["classes"][c]["ci"], expected, atol=1e-12)
            count = sum(int((t.class_index == j).sum()) for t in (fold0["model"], fold1["model"]))
            assert model["classes"][c]["count"] == count
            d = per_draw["model"][:, j] - per_draw["prior"][:, j]
            pair = diffs[("model", "prior")][column]["classes"][c]
            np.testing.assert_allclose(pair["ci"], np.quantile(d, [0.05, 0.95]), atol=1e-12)
            assert pair["p_not_better"] == np.mean(d <= 0)
        mean = per_draw["model"].mean(1)  # every class has findings in every draw here
        np.testing.assert_allclose(model["mean_ci"], np.quantile(mean, [0.05, 0.95]), atol=1e-12)


def _numbers(tree) -> list:
    """Every number of a nested dict / list, in order (None as NaN)."""
    if isinstance(tree, dict):
        return [x for key in sorted(tree) for x in _numbers(tree[key])]
    if isinstance(tree, list | tuple):
        return [x for item in tree for x in _numbers(item)]
    return [np.nan if tree is None else float(tree)]


def test_seed_draws_average_the_picked_seeds_and_identical_seeds_are_one_seed():
    from chestattn_jax.localization_metrics import bootstrap_findings, finding_rates
    from chestattn_jax.metrics import fold_draw_weights, seed_draws

    rng = np.random.default_rng(3)
    k, num_draws = 3, 30
    ids, first = _tables(rng, range(8), k, names=("model", "prior"))
    _, second = _tables(rng, range(8), k, names=("model",))
    folds = [ids]
    kwargs = dict(columns=("pixel_hit",), num_draws=num_draws, seed=1)
    one, _ = bootstrap_findings(folds, {"model": [[first["model"]]]}, list("abc"), **kwargs)
    same, _ = bootstrap_findings(folds, {"model": [[first["model"]]] * 3}, list("abc"), **kwargs)
    assert _numbers(same) == pytest.approx(_numbers(one), abs=1e-12, nan_ok=True)
    # Two different seeds: each draw averages the rates of the seeds it picked.
    draws = fold_draw_weights(folds, num_draws, seed=1)
    picks = seed_draws(2, num_draws, seed=1)
    per_seed = [[first["model"]], [second["model"]]]
    _, rates = finding_rates(per_seed, draws, picks, ("pixel_hit",), k)["pixel_hit"]
    seeds = [first["model"], second["model"]]
    brute = [
        np.mean([_brute_rates([seeds[s]], draws, d, "pixel_hit", k) for s in picks[d]], axis=0)
        for d in range(num_draws)
    ]
    np.testing.assert_allclose(rates, brute, atol=1e-12)
    # A single-seed baseline stands for every seed; pairing it needs the same findings.
    per_seed_prior = {"model": per_seed, "prior": [[first["prior"]]]}
    with pytest.raises(ValueError, match="same findings"):
        bootstrap_findings(folds, per_seed_prior, list("abc"), pairs=[("model", "prior")])


def test_paired_sources_must_hold_the_same_findings():
    import dataclasses

    from chestattn_jax.localization_metrics import bootstrap_findings

    rng = np.random.default_rng(4)
    ids, tables = _tables(rng, range(5), 3, names=("class", "image"))
    # The same findings in another order pair fine.
    order = rng.permutation(len(tables["image"]))
    shuffled = dataclasses.replace(
        tables["image"],
        example_index=tables["image"].example_index[order],
        class_index=tables["image"].class_index[order],
        patient_ids=tables["image"].patient_ids[order],
        values={f: v[order] for f, v in tables["image"].values.items()},
    )
    sources = {"class": [[tables["class"]]], "image": [[shuffled]]}
    pairs = [("class", "image")]
    bootstrap_findings([ids], sources, list("abc"), pairs=pairs, num_draws=5)
    fewer = dataclasses.replace(
        shuffled,
        example_index=shuffled.example_index[1:],
        class_index=shuffled.class_index[1:],
        patient_ids=shuffled.patient_ids[1:],
        values={f: v[1:] for f, v in shuffled.values.items()},
    )
    with pytest.raises(ValueError, match=r"pairs \('class', 'image'\).*same findings"):
        bootstrap_findings([ids], {**sources, "image": [[fewer]]}, list("abc"), pairs=pairs)
    with pytest.raises(ValueError, match="patient ids"):
        bootstrap_findings([ids[::-1]], sources, list("abc"), num_draws=5)
    with pytest.raises(ValueError, match="columns: no 'dice'"):
        bootstrap_findings([ids], sources, list("abc"), columns=("dice",), num_draws=5)


def test_findings_round_trip_through_npz(tmp_path):
    from chestattn_jax.localization_metrics import (
        LocalizationScores,
        load_findings,
        save_findings,
    )

    rng = np.random.default_rng(5)
    masks, labels = _random_truth(rng, 6, 2, 16)
    scores = {"model": LocalizationScores(["a", "b"]), "uniform": LocalizationScores(["a", "b"])}
    for t in range(6):
        scores["model"].add(rng.random((2, 4, 4)), masks[t], labels[t], example=10 + t)
        scores["uniform"].add_uniform((4, 4), masks[t], labels[t], example=10 + t)
    example_ids = np.asarray([f"img{i}.png" for i in range(16)])
    patient_ids = np.asarray([f"p{i // 2}" for i in range(16)])
    tables = {n: s.table(example_ids, patient_ids) for n, s in scores.items()}
    save_findings(tmp_path / "localization.npz", tables)
    back = load_findings(tmp_path / "localization.npz")
    assert list(back) == ["model", "uniform"]
    for name, t in tables.items():
        b = back[name]
        np.testing.assert_array_equal(b.example_index, scores[name].findings()["example"])
        assert b.example_index.min() >= 10
        np.testing.assert_array_equal(b.example_ids, example_ids[b.example_index])
        np.testing.assert_array_equal(b.patient_ids, patient_ids[b.example_index])
        assert b.class_names == ("a", "b") and b.map_threshold == 0.5
        for f, v in t.values.items():
            np.testing.assert_array_equal(b.values[f], v)
    with pytest.raises(ValueError, match="example_ids / patient_ids"):
        scores["model"].table(example_ids[:12], patient_ids[:12])


# ------------------------------------------------------------------ the class prior per class


def test_class_prior_uses_the_training_split_per_class_and_leaves_one_out_for_the_rest():
    from chestattn_jax.localization_metrics import (
        LEAVE_ONE_OUT,
        TRAINING_SPLIT,
        build_class_prior,
    )

    s, k = 8, 3
    train = []
    for rows in (slice(0, 4), slice(4, 8)):  # class 0 only, on two training images
        masks = np.zeros((k, s, s), bool)
        masks[0, rows, :] = True
        train.append({"masks": masks, "labels": np.array([1, 0, 0])})
    evaluated = []
    for cols in (slice(0, 4), slice(4, 8), slice(0, 2)):  # classes 0 and 1 (2 is never seen)
        masks = np.zeros((k, s, s), bool)
        masks[0, :, cols] = True
        masks[1, :, cols] = True
        evaluated.append({"masks": masks, "labels": np.array([1, 1, 0])})
    prior = build_class_prior(iter(train), lambda: iter(evaluated), k)
    assert prior.built_from("xyz") == {"x": TRAINING_SPLIT, "y": LEAVE_ONE_OUT, "z": LEAVE_ONE_OUT}
    info = prior.info("xyz")
    assert info["built_from"] == "per class" and info["images"] == 5
    assert info["images_from"] == {TRAINING_SPLIT: 2, LEAVE_ONE_OUT: 3}
    for own in evaluated:
        maps = prior.maps((2, 2), own["masks"], own["labels"])
        # Class 0 from training (both halves of the rows, whatever image is scored).
        np.testing.assert_allclose(maps[0], [[0.5, 0.5], [0.5, 0.5]])
        # Class 1: the other two evaluated images' mean mask, never the scored one's.
        others = [e["masks"][1] for e in evaluated if e is not own]
        expected = np.mean(others, axis=0).reshape(2, 4, 2, 4).mean(axis=(1, 3))
        np.testing.assert_allclose(maps[1], expected)
        np.testing.assert_array_equal(maps[2], 0.0)
    # With training truth for every class, the evaluated split is never read.
    for t in train:
        t["labels"] = np.array([1, 1, 1])
        t["masks"][1:] = t["masks"][0]
    full = build_class_prior(iter(train), lambda: pytest.fail("read the evaluated split"), k)
    assert full.info("xyz")["built_from"] == TRAINING_SPLIT and full.evaluated is None


class _TruthSource:
    """A split with localisation truth: ``truth_indices()`` and ``truth(i)``."""

    def __init__(self, masks, labels):
        self.masks, self.labels = masks, labels

    def truth_indices(self):
        return np.flatnonzero(self.labels.any(1))

    def truth(self, i):
        return {"masks": self.masks[i], "labels": self.labels[i]}


def test_the_evaluator_scores_writes_and_bootstraps_the_findings(tmp_path):
    """The localization evaluator on a fake split (no model): the metrics it adds, the
    per-class prior's origins and the findings file, numpy only."""
    import csv
    import io
    from types import SimpleNamespace

    from chestattn_jax.evaluation.evaluators.localization import Evaluator
    from chestattn_jax.localization_metrics import LEAVE_ONE_OUT, TRAINING_SPLIT, load_findings
    from chestattn_jax.reporting.result_tables import (
        per_class_csv,
        per_class_markdown,
        per_class_rows,
    )

    rng = np.random.default_rng(6)
    n, k, size, cells = 20, 2, 16, 4
    masks, labels = _random_truth(rng, n, k, size)
    train_labels = np.zeros((5, k), int)
    train_labels[:, 0] = 1  # the training split has truth for class a only
    train_masks, _ = _random_truth(rng, 5, k, size)
    config = SimpleNamespace(
        eval=SimpleNamespace(map_threshold=0.5, bootstrap_draws=50, bootstrap_seed=0, split="test"),
        model=SimpleNamespace(variant="class"),
    )
    ctx = SimpleNamespace(
        config=config,
        out_dir=str(tmp_path),
        source=_TruthSource(masks, labels),
        train_source=_TruthSource(train_masks, train_labels),
        classes=("a", "b"),
        writes=True,
    )
    evaluator = Evaluator(ctx)
    maps = rng.random((n, k, cells, cells)).astype(np.float32)
    for start in range(0, n, 8):  # batches of 8, the last one padded
        index = np.arange(start, start + 8)
        valid = index < n
        evaluator.add(maps[np.minimum(index, n - 1)], {"valid": valid, "index": index})
    # The validation split's maps, for the mIoU thresholds: another fake split.
    assert evaluator.needs_validation_maps
    val_masks, val_labels = _random_truth(rng, 6, k, size)
    val_maps = rng.random((6, k, cells, cells)).astype(np.float32)
    validation = _TruthSource(val_masks, val_labels)
    evaluator.add_validation(
        val_maps, {"valid": np.ones(6, bool), "index": np.arange(6)}, validation
    )
    patients = np.asarray([f"p{i // 2}" for i in range(n)])
    record = SimpleNamespace(
        example_ids=np.asarray([f"x{i}" for i in range(n)]),
        patient_ids=patients,
        classes=("a", "b"),
        evaluated_as=("a", "b"),
    )
    metrics = {"auc": {"a": 0.5, "b": 0.5}}
    evaluator.finish(record, metrics)
    loc = metrics["localization"]
    assert metrics["pointing_game"] == loc["pointing_game"] and loc["headline"] in loc
    prior = loc["baselines"]["class_prior"]
    assert prior["built_from_class"] == {"a": TRAINING_SPLIT, "b": LEAVE_ONE_OUT}
    scored = len(ctx.source.truth_indices())  # the images with a finding
    assert prior["images_from"] == {TRAINING_SPLIT: 5, LEAVE_ONE_OUT: scored}
    tables = load_findings(tmp_path / "localization.npz")
    assert list(tables) == ["model", "class_prior", "uniform"]
    model = tables["model"]
    expected = [(i, j) for i in range(n) for j in range(k) if labels[i, j]]
    assert list(zip(model.example_index, model.class_index, strict=True)) == expected
    np.testing.assert_array_equal(model.patient_ids, patients[model.example_index])
    boot = loc["bootstrap"]
    for name, key in (("model", None), ("class_prior", "class_prior"), ("uniform", "uniform")):
        scores = loc if key is None else loc["baselines"][key]
        rates = boot["rates"][name]
        for c in "ab":
            game = scores["pointing_game_pixel"]["hit_rate"][c]
            assert rates["pixel_hit"]["classes"][c]["rate"] == pytest.approx(game)
            assert rates["cell_hit"]["classes"][c]["rate"] == pytest.approx(
                scores["pointing_game"]["hit_rate"][c]
            )
            assert rates["iou@0.25"]["classes"][c]["rate"] == pytest.approx(
                scores["overlap"]["iou_accuracy"]["0.25"][c]
            )
            column = tables[name].values["pixel_hit"][tables[name].class_index == "ab".index(c)]
            assert game == pytest.approx(column.mean())
    # mIoU: the thresholds chosen on the validation maps, applied to the evaluated ones.
    from chestattn_jax.localization_metrics import MIOU_THRESHOLDS, threshold_ious

    overlap = loc["overlap"]
    for c, j in (("a", 0), ("b", 1)):
        curves = [
            threshold_ious(upsample_map(val_maps[i, j], size), val_masks[i, j])
            for i in range(6)
            if val_labels[i, j]
        ]
        t = MIOU_THRESHOLDS[int(np.argmax(np.mean(curves, 0)))] if curves else None
        assert overlap["tuned_threshold"][c] == t
        tested = [
            threshold_ious(upsample_map(maps[i, j], size), masks[i, j])[MIOU_THRESHOLDS.index(t)]
            for i in range(n)
            if labels[i, j]
        ]
        assert overlap["miou_tuned"][c] == pytest.approx(np.mean(tested))
        column = tables["model"].values["iou_otsu"][tables["model"].class_index == j]
        assert overlap["miou_otsu"][c] == pytest.approx(column.mean())
        assert boot["rates"]["model"]["iou_tuned"]["classes"][c]["rate"] == pytest.approx(
            overlap["miou_tuned"][c]
        )
    assert loc["miou"]["tuned_on"] == "validation split"
    assert loc["miou"]["tuning_findings"] == int(val_labels.sum())
    diff = boot["differences"]["model - uniform"]["pixel_hit"]["mean"]
    assert diff["difference"] == pytest.approx(
        loc["pointing_game_pixel"]["mean_hit_rate"]
        - loc["baselines"]["uniform"]["pointing_game_pixel"]["mean_hit_rate"]
    )
    rows = per_class_rows(metrics, ["a", "b"])
    assert rows[1]["prior_built_from"] == LEAVE_ONE_OUT
    ci = boot["rates"]["model"]["pixel_hit"]["classes"]["a"]["ci"]
    assert [rows[0]["hit_rate_low"], rows[0]["hit_rate_high"]] == ci
    table = per_class_markdown(metrics, rows)
    assert "| leave-one-out |" in table and "| training |" in table
    # per_class.csv: the mean row's cells under their own columns.
    mean = list(csv.DictReader(io.StringIO(per_class_csv(rows))))[-1]
    assert mean["class"] == "mean" and mean["positives"] == ""
    assert float(mean["hit_rate"]) == loc["pointing_game_pixel"]["mean_hit_rate"]
    assert float(mean["miou@otsu"]) == pytest.approx(overlap["mean_miou_otsu"])
    assert "miou@otsu" in table and "prior miou@tuned" in table


def _brute_otsu(levels) -> float:
    """The largest between-class variance of ``levels <= t`` against ``levels > t`` over
    every t, each class's weight and mean computed from the pixels themselves."""
    v = np.asarray(levels, np.float64).ravel()
    best = -1.0
    for t in range(256):
        low, high = v[v <= t], v[v > t]
        if low.size and high.size:
            w0, w1 = low.size / v.size, high.size / v.size
            best = max(best, w0 * w1 * (low.mean() - high.mean()) ** 2)
    return best


def _between(levels, t) -> float:
    v = np.asarray(levels, np.float64).ravel()
    low, high = v[v <= t], v[v > t]
    return low.size / v.size * high.size / v.size * (low.mean() - high.mean()) ** 2


def test_otsu_threshold_maximises_the_between_class_variance():
    from chestattn_jax.localization_metrics import otsu_threshold

    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, (12, 12)),
        np.concatenate([rng.normal(60, 10, 80), rng.normal(180, 20, 64)]).clip(0, 255),
        np.r_[np.zeros(10), np.full(5, 255)],  # two levels: any t in between splits them
        rng.integers(100, 104, 50),
    ]
    for levels in images:
        levels = np.asarray(levels).astype(np.uint8)
        t = otsu_threshold(levels)
        assert _between(levels, t) == pytest.approx(_brute_otsu(levels), rel=1e-9)
        # The first maximiser, as OpenCV takes it.
        assert all(
            _between(levels, u) < _between(levels, t) - 1e-9 for u in range(int(levels.min()), t)
        )
    assert otsu_threshold(np.full((4, 4), 7, np.uint8)) == 0  # one level: nothing to split


def test_miou_otsu_and_thresholds_by_hand():
    """A 4 x 4 map at 4 px (the upsampling is the identity), its Otsu region and its IoU
    at each threshold worked out by hand."""
    from chestattn_jax.localization_metrics import (
        LocalizationScores,
        otsu_region,
        rescaled,
        threshold_ious,
    )

    m = np.asarray([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0.3, 0.3], [0, 0, 0, 0]], np.float32)
    truth = np.zeros((4, 4), bool)
    truth[:2, 2:] = True  # the four pixels at 1
    truth[2, 2] = True  # and one at 0.3
    # Levels 0, 76 (0.3 * 255, truncated) and 255: Otsu splits 255 from the rest.
    np.testing.assert_array_equal(otsu_region(m), m == 1)
    # IoU: the region at 1 is 4 of the 5 truth pixels; above 0.2 it is 6 pixels, 5 in truth.
    ious = threshold_ious(m, truth, (0.2, 0.5))
    np.testing.assert_allclose(ious, [5 / 6, 4 / 5])
    assert rescaled(np.ones((4, 4))) is None
    np.testing.assert_array_equal(otsu_region(np.ones((4, 4))), np.ones((4, 4), bool))
    scores = LocalizationScores(["a"])
    scores.add(m[None], truth[None], np.array([1]))
    overlap = scores.overlap()
    assert overlap["miou_otsu"]["a"] == pytest.approx(4 / 5)
    assert overlap["miou_tuned"]["a"] is None and overlap["tuned_threshold"] == {"a": None}
    # Tuned on a split whose best threshold is 0.2 (the region above 0.2 fits its truth).
    validation = LocalizationScores(["a"])
    other = np.zeros((4, 4), bool)
    other[:3, 2:] = True
    validation.add(m[None], other[None], np.array([1]))
    scores.tune(validation)
    assert scores.tuned_thresholds() == {"a": 0.2}
    assert scores.overlap()["miou_tuned"]["a"] == pytest.approx(5 / 6)
