"""How much the phantoms' finding locations give away: the class-prior baseline's
pointing game against ``PhantomConfig.location_variability``.

For each variability, the class prior (:class:`chestattn_jax.localization_metrics.ClassPrior`,
each class's mean truth mask over the training split's phantoms with findings, as the
localisation evaluator builds it) is scored on the test split's phantoms at the gate-3
map resolution (image_size / 16 cells a side), beside the uniform map and the best
single fixed cell per class (the cell that the most training findings of the class
touch). A model's maps earn credit only where they beat these.

  python benchmarks/location_prior.py                       # 0, 0.5, 1 at 96 px
  python benchmarks/location_prior.py --variability 0,0.25,0.5,0.75,1 --train 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomChestXray, PhantomConfig
from chestattn_jax.localization_metrics import ClassPrior, LocalizationScores, cells_hit


def score(variability: float, args) -> dict:
    """Builds the baselines on ``args.train`` training phantoms and scores them on
    ``args.test`` test phantoms (different examples: the splits never share one)."""
    start = time.perf_counter()
    config = PhantomConfig(image_size=args.image_size, location_variability=variability)
    cells = args.map_cells or args.image_size // 16
    shape = (cells, cells)
    k = len(PHANTOM_CLASSES)
    train = PhantomChestXray(size=args.train, split="train", seed=args.seed, config=config)
    test = PhantomChestXray(size=args.test, split="test", seed=args.seed, config=config)

    prior = ClassPrior(k)
    touched = np.zeros((k, *shape))  # per class, how many training findings touch each cell
    train_rows = train.truth_indices()
    for i in train_rows:
        truth = train.truth(int(i))
        prior.add(truth["masks"], truth["labels"])
        for j in np.flatnonzero(truth["labels"]):
            touched[j] += cells_hit(truth["masks"][j], shape)
    prior_maps = prior.maps(shape)
    # One-hot maps at each class's most often touched cell.
    best_cell = np.zeros((k, cells * cells))
    best_cell[np.arange(k), touched.reshape(k, -1).argmax(1)] = 1.0
    best_cell = best_cell.reshape(k, *shape)

    scores = {name: LocalizationScores(PHANTOM_CLASSES) for name in ("prior", "cell", "uniform")}
    for i in test.truth_indices():
        truth = test.truth(int(i))
        masks, labels = truth["masks"], truth["labels"]
        scores["prior"].add(prior_maps, masks, labels)
        scores["cell"].add(best_cell, masks, labels)
        scores["uniform"].add_uniform(shape, masks, labels)
    games = {name: s.pointing_game() for name, s in scores.items()}
    return {
        "location_variability": variability,
        "image_size": args.image_size,
        "map_cells": cells,
        "train_phantoms": args.train,
        "train_with_findings": len(train_rows),
        "test_phantoms": args.test,
        "test_findings": games["prior"]["count"],
        "mean_hit_rate": {name: g["mean_hit_rate"] for name, g in games.items()},
        "hit_rate": {name: g["hit_rate"] for name, g in games.items()},
        "seconds": time.perf_counter() - start,
    }


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variability", default="0,0.5,1", help="Comma-separated values.")
    parser.add_argument("--train", type=int, default=2000, help="Training phantoms.")
    parser.add_argument("--test", type=int, default=1000, help="Test phantoms.")
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--map_cells", type=int, default=0, help="0: image_size // 16.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="Also write the results to this path.")
    args = parser.parse_args(argv)
    values = [float(v) for v in args.variability.split(",")]

    start = time.perf_counter()
    results = [score(v, args) for v in values]
    total = time.perf_counter() - start

    r0 = results[0]
    print(
        f"{args.train} train / {args.test} test phantoms, {args.image_size} px, seed {args.seed}, "
        f"pointing game on {r0['map_cells']} x {r0['map_cells']} cells\n"
    )
    print("| variability | class prior | best fixed cell | uniform | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        m = r["mean_hit_rate"]
        print(
            f"| {r['location_variability']:g} | {_fmt(m['prior'])} | {_fmt(m['cell'])} "
            f"| {_fmt(m['uniform'])} | {r['seconds']:.1f} |"
        )
    print("\nClass-prior hit rate per class (uniform in brackets; n: test findings, first value)")
    header = " | ".join(f"v={r['location_variability']:g}" for r in results)
    print(f"| class | n | {header} |")
    print("|---|---:|" + "---:|" * len(results))
    for c in PHANTOM_CLASSES:
        cols = " | ".join(
            f"{_fmt(r['hit_rate']['prior'][c])} ({_fmt(r['hit_rate']['uniform'][c])})"
            for r in results
        )
        print(f"| {c} | {r0['test_findings'][c]} | {cols} |")
    print(f"\nWall time: {total:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
