"""The pointing game."""

import numpy as np

from chestattn_jax.localization import argmax_cells, cell_hits, pointing_game


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
