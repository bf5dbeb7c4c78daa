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

    _, workdir = tiny_run
    with open(workdir / "eval" / "metrics.json") as f:
        loc = json.load(f)["localization"]
    prior, uniform = loc["baselines"]["class_prior"], loc["baselines"]["uniform"]
    assert prior["built_from"] in ("training split", "evaluated split, leave-one-out")
    assert prior["images"] > 0
    for scores in (loc, prior, uniform):
        assert scores["pointing_game"]["count"] == loc["pointing_game"]["count"]
        assert 0 <= scores["pointing_game"]["mean_hit_rate"] <= 1
    table = (workdir / "eval" / "per_class.md").read_text()
    assert "prior hit rate" in table and "uniform hit rate" in table


@pytest.mark.slow
def test_evaluation_passes_over_the_split_once(tiny_run, tmp_path, monkeypatch):
    """Logits, loss and maps come from one pass; the results are those of the run's
    own evaluation."""
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
    assert len(passes) == 1 and passes[0] == again["num_examples"]
    with open(workdir / "eval" / "metrics.json") as f:
        before = json.load(f)
    assert again["auc"].keys() == before["auc"].keys()
    for c, v in before["auc"].items():
        assert (v is None and again["auc"][c] is None) or abs(again["auc"][c] - v) < 1e-6
    assert again["localization"]["pointing_game"] == before["localization"]["pointing_game"]


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
