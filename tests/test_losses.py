"""Eq. 5 against a float64 NumPy reference, and the class-weight schemes."""

import jax.numpy as jnp
import numpy as np
import pytest

from chestattn_jax.losses import attention_entropy, class_weights, regularized_loss


def reference_loss(logits, labels, mask, weights, log_w, lam):
    """Eq. 5 written out in float64, term by term."""
    logits = logits.astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-logits))
    n, k = logits.shape
    total = 0.0
    for t in range(n):
        for i in range(k):
            w = np.exp(log_w[t, i].astype(np.float64).ravel())
            w /= w.sum()
            entropy = -np.sum(w * np.log(w))
            total += mask[t, i] * (
                weights[i] * labels[t, i] * np.log(p[t, i])
                + (1 - labels[t, i]) * (np.log(1 - p[t, i]) + lam * entropy)
            )
    return -total / n


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    n, k = 6, 4
    return dict(
        logits=rng.normal(scale=2.0, size=(n, k)).astype(np.float32),
        labels=(rng.random((n, k)) < 0.4).astype(np.float32),
        mask=(rng.random((n, k)) < 0.8).astype(np.float32),
        weights=rng.uniform(0.5, 5.0, size=k).astype(np.float32),
        log_w=rng.normal(scale=3.0, size=(n, k, 5, 7)).astype(np.float32),
    )


@pytest.mark.parametrize("lam", [0.0, 0.1, 2.0])
def test_loss_matches_float64_reference(batch, lam):
    b = batch
    loss, parts = regularized_loss(
        jnp.asarray(b["logits"]),
        jnp.asarray(b["labels"]),
        jnp.asarray(b["mask"]),
        jnp.asarray(b["weights"]),
        jnp.asarray(b["log_w"]),
        lam,
    )
    expected = reference_loss(b["logits"], b["labels"], b["mask"], b["weights"], b["log_w"], lam)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    without = reference_loss(b["logits"], b["labels"], b["mask"], b["weights"], b["log_w"], 0.0)
    np.testing.assert_allclose(float(parts["bce"]), without, rtol=1e-5)


def test_loss_without_maps_is_weighted_bce(batch):
    b = batch
    loss, parts = regularized_loss(
        jnp.asarray(b["logits"]),
        jnp.asarray(b["labels"]),
        jnp.asarray(b["mask"]),
        jnp.asarray(b["weights"]),
    )
    expected = reference_loss(b["logits"], b["labels"], b["mask"], b["weights"], b["log_w"], 0.0)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(parts["entropy"]) == 0.0


def test_masked_labels_do_not_count(batch):
    b = dict(batch)
    args = lambda d: (
        jnp.asarray(d["logits"]),
        jnp.asarray(d["labels"]),
        jnp.asarray(d["mask"]),
        jnp.asarray(d["weights"]),
        jnp.asarray(d["log_w"]),
        0.3,
    )
    loss1, _ = regularized_loss(*args(b))
    changed = dict(b)
    changed["labels"] = np.where(b["mask"] > 0, b["labels"], 1 - b["labels"])
    changed["logits"] = np.where(b["mask"] > 0, b["logits"], 40.0)
    loss2, _ = regularized_loss(*args(changed))
    np.testing.assert_allclose(float(loss1), float(loss2), rtol=1e-6)


def test_flattening_a_negative_class_map_lowers_the_loss(batch):
    b = batch
    t, i = np.argwhere((b["labels"] == 0) & (b["mask"] == 1))[0]
    flatter = b["log_w"].copy()
    flatter[t, i] = 0.0  # uniform map: maximal entropy
    args = lambda log_w: regularized_loss(
        jnp.asarray(b["logits"]),
        jnp.asarray(b["labels"]),
        jnp.asarray(b["mask"]),
        jnp.asarray(b["weights"]),
        jnp.asarray(log_w),
        0.5,
    )[0]
    assert float(args(flatter)) < float(args(b["log_w"]))
    # A positive class's map is not regularised.
    t, i = np.argwhere((b["labels"] == 1) & (b["mask"] == 1))[0]
    flat_positive = b["log_w"].copy()
    flat_positive[t, i] = 0.0
    np.testing.assert_allclose(float(args(flat_positive)), float(args(b["log_w"])), rtol=1e-6)


def test_entropy_is_stable_and_bounded():
    peaked = jnp.full((1, 4, 4), -1e30).at[0, 1, 2].set(0.0)
    uniform = jnp.zeros((1, 4, 4))
    assert float(attention_entropy(peaked)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_entropy(uniform)[0]) == pytest.approx(np.log(16), rel=1e-6)


def test_extreme_logits_give_finite_loss():
    logits = jnp.asarray([[100.0, -100.0]])
    labels = jnp.asarray([[0.0, 1.0]])
    loss, _ = regularized_loss(logits, labels, jnp.ones((1, 2)), jnp.ones((2,)))
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(200.0, rel=1e-6)


def test_class_weight_schemes():
    counts = np.array([10, 40, 200])
    np.testing.assert_allclose(class_weights(counts, 1000, "paper"), [10.0, 2.5, 0.5])
    np.testing.assert_allclose(class_weights(counts, 1000, "inverse_frequency"), [99.0, 24.0, 4.0])
    np.testing.assert_array_equal(class_weights(counts, 1000, "none"), [1, 1, 1])
    # N per class where labels are masked somewhere: only the labelled examples are negatives.
    labelled = np.array([1000, 400, 600])
    np.testing.assert_allclose(
        class_weights(counts, labelled, "inverse_frequency"), [99.0, 9.0, 2.0]
    )


def test_class_weight_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'balanced'.*config\.loss\.class_weights"):
        class_weights([1, 2], 10, "balanced")
    with pytest.raises(ValueError, match="none for: Hernia"):
        class_weights([5, 0], 10, "paper", ["Mass", "Hernia"])
