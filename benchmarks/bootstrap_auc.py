"""Seconds for per-class AUC with 1000 patient bootstrap draws on 25,596 x 14 predictions.

25,596 is the size of NIH ChestX-ray14's official test list. The goal is at most
5 s on a 2-core CPU; the sklearn figure is a loop of ``roc_auc_score`` over draws
and classes on a subset of the draws, scaled up to all of them. The last two rows are
what ``compare`` of three workdirs computes (three models, two paired differences):
one call per model and per pair, as before ``bootstrap_models``, and one
``bootstrap_models`` call.

  python benchmarks/bootstrap_auc.py
"""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from chestattn_jax.metrics import (
    bootstrap_auc,
    bootstrap_models,
    paired_auc_difference,
    patient_draw_weights,
)


def main(n: int = 25_596, k: int = 14, draws: int = 1000, sklearn_draws: int = 20):
    rng = np.random.default_rng(0)
    labels = (rng.random((n, k)) < 0.1).astype(np.int32)
    probs = np.clip(0.2 * labels + rng.random((n, k)), 0, 1).astype(np.float32)
    patients = rng.integers(0, n // 4, n)
    classes = [f"c{j}" for j in range(k)]

    start = time.perf_counter()
    out = bootstrap_auc(labels, probs, np.ones_like(labels), classes, patients, num_draws=draws)
    ours = time.perf_counter() - start

    weights = patient_draw_weights(patients, sklearn_draws, seed=0)
    start = time.perf_counter()
    for d in range(sklearn_draws):
        for j in range(k):
            roc_auc_score(labels[:, j], probs[:, j], sample_weight=weights[d])
    sk = (time.perf_counter() - start) * draws / sklearn_draws

    print(f"Machine: {os.cpu_count()} CPUs; {n} x {k} predictions, {draws} draws")
    print("| method | seconds | ratio |")
    print("|---|---|---|")
    print(f"| chestattn_jax.metrics.bootstrap_auc | {ours:.2f} | 1.0 |")
    print(
        f"| sklearn roc_auc_score loop (extrapolated from {sklearn_draws} draws) | {sk:.1f} "
        f"| {sk / ours:.1f} |"
    )
    print(f"mean AUC {out['mean_auc']:.4f}, 95% CI {out['mean_ci']}")

    models = {m: np.clip(probs + 0.05 * m * labels, 0, 1) for m in range(3)}
    args = (np.ones_like(labels), classes, patients)
    start = time.perf_counter()
    for m in models:
        bootstrap_auc(labels, models[m], *args, num_draws=draws)
    for m in (1, 2):
        paired_auc_difference(labels, models[m], models[0], *args, num_draws=draws)
    separate = time.perf_counter() - start
    start = time.perf_counter()
    bootstrap_models(labels, models, *args, num_draws=draws, pairs=[(1, 0), (2, 0)])
    shared = time.perf_counter() - start
    print("| compare of 3 models: 3 bootstrap_auc + 2 paired_auc_difference calls |", end="")
    print(f" {separate:.2f} | {separate / shared:.1f} |")
    print(f"| compare of 3 models: one bootstrap_models call | {shared:.2f} | 1.0 |")


if __name__ == "__main__":
    main()
