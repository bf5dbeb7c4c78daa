"""The paper's Table 1/2 layout for several trained models on the same test split.

  python -m chestattn_jax.compare W_resnet W_image W_class --out=comparison

reads each workdir's ``eval/predictions.npz`` (written by training or
``--mode=evaluate``) and writes ``comparison/table.md`` and ``table.csv``: classes
by models, AUC with its 95 % patient-bootstrap interval, a mean row, and for every
model after the first its paired bootstrap difference against the first.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from chestattn_jax.metrics import bootstrap_auc, paired_auc_difference


def load_predictions(workdir: str) -> dict:
    path = os.path.join(workdir, "eval", "predictions.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: train or run --mode=evaluate on {workdir} first."
        )
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def compare(workdirs, out_dir: str, num_draws: int = 1000, seed: int = 0) -> dict:
    """Writes ``table.md`` and ``table.csv`` into ``out_dir``; returns the numbers."""
    if len(workdirs) < 1:
        raise ValueError("Give at least one workdir.")
    preds = [load_predictions(w) for w in workdirs]
    ref = preds[0]
    for w, p in zip(workdirs[1:], preds[1:], strict=True):
        same = (
            p["labels"].shape == ref["labels"].shape
            and np.array_equal(p["labels"], ref["labels"])
            and np.array_equal(p["classes"], ref["classes"])
            and np.array_equal(p["patient_ids"], ref["patient_ids"])
        )
        if not same:
            raise ValueError(
                f"{w} was evaluated on another test split or class list than "
                f"{workdirs[0]}; paired comparison needs the same one."
            )
    classes = [str(c) for c in ref["classes"]]
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    aucs = [
        bootstrap_auc(
            ref["labels"], p["probs"], ref["mask"], classes, ref["patient_ids"], num_draws, seed
        )
        for p in preds
    ]
    diffs = [
        paired_auc_difference(
            ref["labels"],
            p["probs"],
            ref["probs"],
            ref["mask"],
            classes,
            ref["patient_ids"],
            num_draws,
            seed,
        )
        for p in preds[1:]
    ]

    def cell(auc, ci):
        return "n/a" if auc is None else f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    def diff_cell(d):
        if d["difference"] is None:
            return "n/a"
        return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"

    header = ["class", *names, *[f"{n} - {names[0]}" for n in names[1:]]]
    rows = []
    for c in classes:
        rows.append(
            [
                c,
                *[cell(a["classes"][c]["auc"], a["classes"][c]["ci"]) for a in aucs],
                *[diff_cell(d["classes"][c]) for d in diffs],
            ]
        )
    rows.append(
        [
            "mean",
            *[cell(a["mean_auc"], a["mean_ci"]) for a in aucs],
            *[diff_cell(d["mean"]) for d in diffs],
        ]
    )
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "table.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "---|" * len(header) + "\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
        f.write(
            f"\nTest AUC with 95 % intervals from {num_draws} patient-level bootstrap draws; "
            f"differences are paired (same draws) against {names[0]}.\n"
        )
    return {
        "auc": dict(zip(names, aucs, strict=True)),
        "difference": dict(zip(names[1:], diffs, strict=True)),
    }


def main(argv):
    from absl import flags

    f = flags.FLAGS
    result = compare(argv[1:], f.out, f.num_draws, f.seed)
    with open(os.path.join(f.out, "table.md")) as t:
        print(t.read())
    return result


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", "comparison", "Folder for table.md and table.csv.")
    flags.DEFINE_integer("num_draws", 1000, "Bootstrap draws.")
    flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
    app.run(lambda argv: main(argv) and None)
