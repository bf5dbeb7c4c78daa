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

import os
import sys

import numpy as np
from etils import epath

from chestattn_jax import files
from chestattn_jax.evaluation.inference_pass import Record, check_paired
from chestattn_jax.metrics import bootstrap_models
from chestattn_jax.reporting import plots, result_tables
from chestattn_jax.workdir import ATTENTION_EXAMPLES_FILE, EVAL_DIR, PREDICTIONS_FILE, write_text


def load_predictions(workdir: str) -> Record:
    """The evaluation record of ``workdir`` (``eval/predictions.npz``)."""
    path = os.path.join(workdir, EVAL_DIR, PREDICTIONS_FILE)
    if not epath.Path(path).exists():
        raise FileNotFoundError(
            f"{path} not found: train or run --mode=evaluate on {workdir} first."
        )
    return Record.load(path)


def column_names(workdirs) -> list[str]:
    """Each workdir's last path component, or as many trailing components as it takes to
    tell workdirs apart (``runs/a/w`` and ``runs/b/w`` -> ``a/w``, ``b/w``)."""
    parts = [os.path.normpath(w.split("://")[-1]).split(os.sep) for w in workdirs]
    if len({tuple(p) for p in parts}) < len(parts):
        raise ValueError(f"A workdir is given twice: {', '.join(workdirs)}.")
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(workdirs)


def compare(workdirs, out_dir: str, num_draws: int = 1000, seed: int = 0) -> dict:
    """Writes ``table.md`` and ``table.csv`` into ``out_dir``; returns the numbers."""
    if len(workdirs) < 1:
        raise ValueError("Give at least one workdir.")
    preds = [load_predictions(w) for w in workdirs]
    check_paired(workdirs, preds)
    ref = preds[0]
    classes = list(ref.classes)
    names = column_names(workdirs)
    others = range(1, len(preds))
    by_model, by_pair = bootstrap_models(
        ref.labels,
        {i: p.probs for i, p in enumerate(preds)},
        ref.mask,
        classes,
        ref.patient_ids,
        num_draws,
        seed,
        pairs=[(i, 0) for i in others],
    )
    aucs = [by_model[i] for i in range(len(preds))]
    diffs = [by_pair[(i, 0)] for i in others]

    md, csv = result_tables.comparison_tables(names, classes, aucs, diffs, num_draws)
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_text(epath.Path(out_dir) / "table.csv", csv)
    write_text(epath.Path(out_dir) / "table.md", md)
    return {
        "auc": dict(zip(names, aucs, strict=True)),
        "difference": dict(zip(names[1:], diffs, strict=True)),
        "figures": attention_figures(workdirs, names, classes, out_dir),
    }


def attention_figures(workdirs, names, classes, out_dir: str) -> list[str]:
    """Fig. 2 and Fig. 3 from the workdirs that have ``eval/attention_examples.npz``."""
    examples = {}
    for w, name in zip(workdirs, names, strict=True):
        path = os.path.join(w, EVAL_DIR, ATTENTION_EXAMPLES_FILE)
        if epath.Path(path).exists():
            examples[name] = files.read_npz(path)
    written = []
    if examples:
        written.append(
            plots.average_mask_rows(
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
        written.append(
            plots.fig2_attention(
                os.path.join(out_dir, "fig2_attention.png"),
                classes,
                klass["index"],
                klass["images"],
                klass["labels"],
                image_maps=image["maps"],
                class_maps=klass["maps"],
            )
        )
    return written


def main(argv):
    from absl import flags

    f = flags.FLAGS
    if len(argv) < 2:
        sys.exit("FATAL: give the workdirs to compare: python -m chestattn_jax.compare W1 W2 ...")
    try:
        result = compare(argv[1:], f.out, f.num_draws, f.seed)
    except (ValueError, OSError) as e:  # no evaluation yet, other test splits, unwritable
        sys.exit(f"FATAL: {e}")
    print((epath.Path(f.out) / "table.md").read_text())
    return result


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", "comparison", "Folder for table.md and table.csv.")
    flags.DEFINE_integer("num_draws", 1000, "Bootstrap draws.")
    flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
    app.run(lambda argv: main(argv) and None)
