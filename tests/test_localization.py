"""The pointing game and IoU / IoBB of thresholded maps."""

import numpy as np
import pytest

from chestattn_jax.localization import (
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
