"""Seconds (wall and CPU) that the evaluators beyond AUC add to an evaluation of NIH
ChestX-ray14's official test list: 25,596 x 14 predictions, 1000 patient-bootstrap draws,
a validation split of 11,212 images for the thresholds and the recalibration.

Each row is the numpy work of one evaluator's ``finish`` on synthetic predictions with NIH's
shape (about 9 images per patient, sex / age / view attributes): calibration (ECE and Brier
before and after, the Platt fit), operating points (three threshold rules, their test
metrics, the ROC points), subgroups (sex, four age bands, view). ``auc`` (the existing
per-class bootstrap) is the reference. The goal: together at most 30 s on the 2-core CPU.

  python benchmarks/evaluators.py
"""

from __future__ import annotations

import time

import numpy as np

from chestattn_jax.calibration import apply_recalibration, calibration_summary, fit_recalibration
from chestattn_jax.metrics import bootstrap_auc
from chestattn_jax.operating_points import choose_thresholds, operating_point_summary, roc_points
from chestattn_jax.subgroups import subgroup_auc


def _data(n, k, rng):
    labels = (rng.random((n, k)) < 0.08).astype(np.int32)
    logits = 1.5 * labels + rng.normal(size=(n, k)) + np.log(20.0)  # class-weight offset
    probs = 1.0 / (1.0 + np.exp(-logits))
    return labels, probs, np.ones_like(labels), rng.integers(0, n // 9, n).astype(str)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(n: int = 25_596, n_val: int = 11_212, k: int = 14, draws: int = 1000):
    rng = np.random.default_rng(0)
    classes = [f"c{j}" for j in range(k)]
    labels, probs, mask, patients = _data(n, k, rng)
    v_labels, v_probs, v_mask, _ = _data(n_val, k, rng)
    attributes = {
        "sex": rng.choice(["M", "F"], n),
        "age": rng.integers(18, 95, n).astype(np.int32),
        "view": rng.choice(["PA", "AP"], n, p=[0.6, 0.4]),
    }
    bootstrap = {"num_draws": draws, "seed": 0}

    def calibration():
        params = fit_recalibration(v_probs, v_labels, v_mask, classes)
        for p in (probs, apply_recalibration(probs, params)):
            calibration_summary(labels, p, mask, classes, patients, **bootstrap)

    def operating_points():
        for rule in ("youden", "sensitivity>=0.9", "specificity>=0.9"):
            chosen = choose_thresholds(v_labels, v_probs, v_mask, classes, rule)
            thresholds = {c: chosen[c]["threshold"] for c in classes}
            operating_point_summary(labels, probs, mask, classes, thresholds, patients, **bootstrap)
        roc_points(labels, probs, mask, classes, (0.9, 0.95), patients, **bootstrap)

    def subgroups():
        subgroup_auc(
            labels, probs, mask, classes, patients, attributes, age_bands=(40, 60, 80), **bootstrap
        )

    def auc():
        bootstrap_auc(labels, probs, mask, classes, patients, **bootstrap)

    rows = [
        (name, *_timed(fn))
        for name, fn in [
            ("calibration", calibration),
            ("operating_points", operating_points),
            ("subgroups", subgroups),
            ("auc (reference)", auc),
        ]
    ]
    added = sum(wall for name, wall, _ in rows if not name.startswith("auc"))
    print(f"{n} x {k} predictions, {draws} draws, validation {n_val} images")
    for name, wall, cpu in rows:
        print(f"  {name:18s} {wall:6.1f} s wall  {cpu:6.1f} s CPU")
    print(f"  {'added, together':18s} {added:6.1f} s wall  (goal: at most 30 s)")


if __name__ == "__main__":
    main()
