"""The paper's Table 1/2 layout for several trained models on the same test split.

  python -m chestattn_jax.compare W_resnet W_image W_class --out=comparison

reads each workdir's (local or ``gs://``) ``eval/predictions.npz`` (written by training or
``--mode=evaluate``) and writes ``comparison/table.md`` and ``table.csv``: classes
by models, AUC with its 95 % patient-bootstrap interval, a mean row, and for every
model after the first its paired bootstrap difference against the first.

From the attention models' ``eval/attention_examples.npz`` it also draws the
paper's figures: ``fig2_attention.png`` (each test image, the image-based map,
and the class-based map of each positive class; needs one image-based and one
class-based workdir) and ``fig3_average_masks.png`` (each class's average map
over test images whose only finding is that class, one row per model).
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from etils import epath

from chestattn_jax import figures
from chestattn_jax.metrics import bootstrap_auc, paired_auc_difference


def load_predictions(workdir: str) -> dict:
    path = os.path.join(workdir, "eval", "predictions.npz")
    if not epath.Path(path).exists():
        raise FileNotFoundError(
            f"{path} not found: train or run --mode=evaluate on {workdir} first."
        )
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as z:
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
        "figures": attention_figures(workdirs, names, classes, out_dir),
    }


def attention_figures(workdirs, names, classes, out_dir: str) -> list[str]:
    """Fig. 2 and Fig. 3 from the workdirs that have ``eval/attention_examples.npz``."""
    examples = {}
    for w, name in zip(workdirs, names, strict=True):
        path = os.path.join(w, "eval", "attention_examples.npz")
        if epath.Path(path).exists():
            with np.load(io.BytesIO(epath.Path(path).read_bytes())) as z:
                examples[name] = {k: z[k] for k in z.files}
    written = []
    if examples:
        written.append(
            figures.average_mask_rows(
                {
                    f"{n} ({e['variant']})": (e["average_masks"], e["average_counts"])
                    for n, e in examples.items()
                },
                classes,
                os.path.join(out_dir, "fig3_average_masks.png"),
            )
        )
    image = next((e for e in examples.values() if str(e["variant"]) == "image"), None)
    klass = next((e for e in examples.values() if str(e["variant"]) == "class"), None)
    if image is not None and klass is not None and np.array_equal(image["index"], klass["index"]):
        rows = [
            {
                "image": klass["images"][r],
                "labels": klass["labels"][r],
                "image_map": image["maps"][r],
                "class_maps": klass["maps"][r],
                "title": f"test #{int(i)}: "
                + ", ".join(classes[j] for j in np.flatnonzero(klass["labels"][r])),
            }
            for r, i in enumerate(klass["index"])
        ]
        written.append(
            figures.attention_rows(rows, classes, os.path.join(out_dir, "fig2_attention.png"))
        )
    return written


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
