"""Figures are written as valid PNGs of the expected size, from plain arrays."""

import numpy as np
import pytest
from PIL import Image

from chestattn_jax.reporting import plots as figures


def png_size(path):
    with Image.open(path) as im:
        im.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as im:
        return im.format, im.size


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < 0.3).astype(int)
    probs = np.clip(labels * 0.3 + rng.random((200, 3)) * 0.7, 0, 1).round(1)  # with ties
    mask = np.ones_like(labels)
    mask[:50, 2] = 0
    return labels, probs, mask


def test_roc_curves(data, tmp_path):
    labels, probs, mask = data
    labels[:, 1] = 0  # one label value only: drawn without a curve, not an error
    path = figures.roc_curves(labels, probs, mask, ["a", "b", "c"], str(tmp_path / "r.png"))
    fmt, (w, h) = png_size(path)
    assert fmt == "PNG"
    assert (w, h) == (round(3 * 2.4 * figures.DPI), round(2.4 * figures.DPI))
    # 7 classes wrap onto a second row of at most 5 panels.
    seven = np.tile(labels, 3)[:, :7], np.tile(probs, 3)[:, :7], np.tile(mask, 3)[:, :7]
    path = figures.roc_curves(*seven, list("abcdefg"), str(tmp_path / "r7.png"))
    assert png_size(path)[1] == (round(5 * 2.4 * figures.DPI), round(2 * 2.4 * figures.DPI))


def test_overlays_for_each_variant(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    probs = np.array([0.9, 0.2, 0.5])
    names = ["a", "b", "c"]
    per_class = figures.image_overlays(
        image, rng.random((3, 4, 4)), names, probs, str(tmp_path / "c.png")
    )
    shared = figures.image_overlays(
        image, rng.random((4, 4)), names, probs, str(tmp_path / "i.png")
    )
    plain = figures.image_overlays(image, None, names, probs, str(tmp_path / "r.png"))
    panel = round(figures.PANEL_INCHES * figures.DPI)
    extra = round(0.3 * figures.DPI)
    assert png_size(per_class)[1] == (4 * panel, panel + extra)  # input + 3 class maps
    assert png_size(shared)[1] == (2 * panel, panel + extra)  # input + the shared map
    assert png_size(plain)[1] == (panel, panel + extra)  # input and the probabilities


def test_attention_rows_and_average_masks(tmp_path):
    rng = np.random.default_rng(2)
    names = ["a", "b", "c"]
    examples = [
        {
            "image": rng.integers(0, 256, (32, 32), dtype=np.uint8),
            "labels": np.array(y),
            "image_map": rng.random((4, 4)),
            "class_maps": rng.random((3, 4, 4)),
        }
        for y in ([1, 0, 1], [0, 1, 0])
    ]
    path = figures.attention_rows(examples, names, str(tmp_path / "fig2.png"))
    panel = round(figures.PANEL_INCHES * figures.DPI)
    # Widest row: image + image-based map + 2 positive classes; one row per image.
    assert png_size(path)[1] == (4 * panel, 2 * panel)
    masks = {"a": rng.random((4, 4)), "b": None, "c": rng.random((4, 4))}
    path = figures.average_masks(masks, {"a": 3, "b": 0, "c": 1}, str(tmp_path / "fig3.png"))
    assert png_size(path)[1] == (3 * panel, panel + round(0.3 * figures.DPI))
    path = figures.average_mask_rows(
        {"image": (rng.random((3, 4, 4)), [1, 0, 2]), "class": (rng.random((3, 4, 4)), [1, 0, 2])},
        names,
        str(tmp_path / "rows.png"),
    )
    assert png_size(path)[1] == (round(3 * 1.6 * figures.DPI), round(2 * 1.6 * figures.DPI))
