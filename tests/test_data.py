"""The procedural source and the grain pipelines."""

import itertools

import numpy as np
import pytest

from chestattn_jax.data.input_pipeline import eval_batches, train_dataset
from chestattn_jax.data.synthetic import SYNTHETIC_CLASSES, SyntheticChestXray


def test_examples_are_pure_functions_of_seed_split_and_index():
    a = SyntheticChestXray(size=20, image_size=32, seed=3)
    b = SyntheticChestXray(size=20, image_size=32, seed=3)
    for i in (0, 7, 19):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["labels"], a.labels(i))
    other_seed = SyntheticChestXray(size=20, image_size=32, seed=4)
    other_split = SyntheticChestXray(size=20, split="test", image_size=32, seed=3)
    assert not np.array_equal(a[0]["image"], other_seed[0]["image"])
    assert not np.array_equal(a[0]["image"], other_split[0]["image"])
    ex = a[0]
    assert ex["image"].shape == (32, 32, 1) and ex["image"].dtype == np.uint8
    assert ex["labels"].shape == (len(SYNTHETIC_CLASSES),)


def test_findings_change_the_image_where_they_live():
    """Each finding drawn on the same phantom changes pixels, and in its own region."""
    from chestattn_jax.data.synthetic import render

    size = 64
    none = dict.fromkeys(SYNTHETIC_CLASSES, False)
    base = render(np.random.default_rng(0), size, none, noise=0.0).astype(float)[..., 0]
    rows = {}
    for name in SYNTHETIC_CLASSES:
        img = render(np.random.default_rng(0), size, {**none, name: True}, noise=0.0)
        diff = np.abs(img[..., 0].astype(float) - base) > 0
        assert diff.any(), name
        rows[name] = np.nonzero(diff)[0].mean() / size
    assert rows["Pneumothorax"] < 0.45  # an apex
    assert rows["Effusion"] > 0.55  # a costophrenic angle
    assert rows["Cardiomegaly"] > 0.5  # the heart sits low


def test_positive_counts_match_labels():
    src = SyntheticChestXray(size=50, image_size=16)
    counts = src.positive_counts()
    np.testing.assert_array_equal(counts, sum(src[i]["labels"] for i in range(50)))
    assert np.all(counts > 0)


def test_bad_source_arguments():
    with pytest.raises(ValueError, match="no class 'Hernia'"):
        SyntheticChestXray(size=4, classes=("Hernia",))
    with pytest.raises(ValueError, match="split 'validation' is empty"):
        SyntheticChestXray(size=0, split="validation")
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        SyntheticChestXray(size=4, split="val")


def test_same_seed_same_batches_and_reshuffled_epochs():
    src = SyntheticChestXray(size=12, image_size=16)

    def take(seed, n):
        it = iter(train_dataset(src, batch_size=4, seed=seed))
        return [next(it) for _ in range(n)]

    a, b, c = take(0, 6), take(0, 6), take(1, 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    assert set(a[0]) == {"image", "labels", "mask"} and a[0]["image"].shape == (4, 16, 16, 1)
    # Epoch 1 (batches 0-2) holds every example once; epoch 2 is another order.
    first = np.concatenate([x["image"] for x in a[:3]]).reshape(12, -1)
    second = np.concatenate([x["image"] for x in a[3:]]).reshape(12, -1)
    assert len({r.tobytes() for r in first}) == 12
    assert {r.tobytes() for r in first} == {r.tobytes() for r in second}
    assert not np.array_equal(first, second)


def test_eval_batches_pad_and_mask_the_last_batch():
    src = SyntheticChestXray(size=10, image_size=16)
    batches = list(eval_batches(src, 4))
    assert len(batches) == 3
    assert [int(b["valid"].sum()) for b in batches] == [4, 4, 2]
    assert not batches[-1]["mask"][2:].any()
    images = np.concatenate([b["image"][b["valid"]] for b in batches])
    expected = np.stack([src[i]["image"] for i in range(10)])
    np.testing.assert_array_equal(images, expected)
    assert all(b["image"].shape[0] == 4 for b in itertools.islice(batches, 3))


def test_augmentation_is_small_seeded_and_never_flips_by_default():
    from chestattn_jax.data.augment import Augment

    image = np.zeros((64, 64, 1), np.uint8)
    image[20:44, 40:56] = 200  # a bright "heart" on the image's right
    ex = {"image": image, "labels": np.array([1])}
    aug = Augment()
    outs = [aug(ex, np.random.default_rng(s))["image"][..., 0].astype(float) for s in range(20)]
    for out in outs:
        assert out[:, 32:].mean() - out[:, :32].mean() > 30  # stays on the right
    assert not all(np.array_equal(outs[0], o) for o in outs[1:])
    np.testing.assert_array_equal(
        aug(ex, np.random.default_rng(5))["image"], aug(ex, np.random.default_rng(5))["image"]
    )
    identity = Augment(rotation_deg=0, scale=0, shift=0, contrast=0, brightness=0, gamma=0)
    np.testing.assert_array_equal(identity(ex, np.random.default_rng(0))["image"], image)
    flipped = Augment(
        rotation_deg=0, scale=0, shift=0, contrast=0, brightness=0, gamma=0, hflip=True
    )
    flips = [flipped(ex, np.random.default_rng(s))["image"] for s in range(10)]
    assert any(np.array_equal(f, image[:, ::-1]) for f in flips)
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        Augment(interpolation="cubic")
