"""The paper's Table 1/2 layout for several trained models on the same test split.

  python -m chestattn_jax.compare W_resnet W_image W_class --out=comparison

reads each workdir's (local or ``gs://``) ``eval/predictions.npz`` (written by training or
``--mode=evaluate``) and writes ``comparison/table.md`` and ``table.csv``: classes
by models, AUC with its 95 % patient-bootstrap interval, a mean row, and for every
model after the first its paired bootstrap difference against the first. The same
numbers, with what was compared (each workdir's evaluation: data set, fingerprint,
split, settings, and which of its sections it holds), go to ``comparison.json``, and
on one page to ``report.html`` (:func:`chestattn_jax.reporting.html_pages.compare_page`),
which links each evaluation's own ``report.html``.

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
from chestattn_jax.reporting import html_blocks, html_pages, plots, result_tables
from chestattn_jax.workdir import (
    ATTENTION_EXAMPLES_FILE,
    EVAL_DIR,
    PREDICTIONS_FILE,
    read_json,
    write_json,
    write_text,
)

COMPARISON_FILE = "comparison.json"
REPORT_FILE = "report.html"


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
    """Writes ``table.md``, ``table.csv``, ``comparison.json`` and ``report.html`` into
    ``out_dir`` (and the figures of :func:`attention_figures`); returns what
    ``comparison.json`` holds: ``names`` (each workdir's column), ``workdirs``,
    ``classes``, ``num_examples``, ``num_draws``, ``seed``, ``split``, ``dataset``
    (``name``, ``fingerprint``), ``positives`` / ``negatives`` per class, ``evaluations``
    (per name: :func:`evaluation`), ``auc`` (per name: the bootstrap summary of
    :func:`chestattn_jax.metrics.bootstrap_models`), ``difference`` (per later name: its
    paired difference against the first) and ``figures`` (file names in ``out_dir``)."""
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
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "table.csv", csv)
    write_text(out / "table.md", md)
    evaluations = {n: evaluation(w, out_dir) for n, w in zip(names, workdirs, strict=True)}
    known = (ref.mask > 0).sum(0)
    positives = ((ref.labels > 0) & (ref.mask > 0)).sum(0)
    result = {
        "names": names,
        "workdirs": list(workdirs),
        "classes": classes,
        "num_examples": len(ref.labels),
        "num_draws": num_draws,
        "seed": seed,
        "split": _common(e.get("split") for e in evaluations.values()),
        "dataset": _dataset(evaluations),
        "positives": dict(zip(classes, positives.tolist(), strict=True)),
        "negatives": dict(zip(classes, (known - positives).tolist(), strict=True)),
        "evaluations": evaluations,
        "auc": dict(zip(names, aucs, strict=True)),
        "difference": dict(zip(names[1:], diffs, strict=True)),
        "figures": [
            os.path.basename(f) for f in attention_figures(workdirs, names, classes, out_dir)
        ],
    }
    write_json(out / COMPARISON_FILE, result)
    images = {f: html_blocks.file_uri(out / f) for f in result["figures"]}
    write_text(out / REPORT_FILE, html_pages.compare_page(result, images))
    return result


def evaluation(workdir: str, out_dir: str) -> dict:
    """What ``compare``'s page says of ``workdir``'s evaluation (``eval/``): its variant,
    step, split, data set and settings from ``metrics.json`` (none where it has none), the
    link from ``out_dir`` to its ``report.html`` (``report``; a bucket's path as
    ``report_file``) and which of its parts are absent and why
    (:func:`chestattn_jax.reporting.html_pages.absent_parts`)."""
    folder = epath.Path(workdir) / EVAL_DIR
    metrics = read_json(folder / "metrics.json")
    names = [p.name for p in folder.iterdir()] if folder.exists() else []
    out = {"workdir": workdir, "absent": html_pages.absent_parts(metrics, names)}
    if metrics is not None:
        data = metrics.get("dataset") or {}
        out.update(
            variant=metrics.get("variant"),
            step=metrics.get("step"),
            split=metrics.get("split"),
            dataset_name=data.get("name"),
            dataset_fingerprint=data.get("fingerprint"),
            settings=metrics.get("settings") or {},
        )
    if REPORT_FILE in names:
        report = os.path.join(workdir, EVAL_DIR, REPORT_FILE)
        local = "://" not in workdir and "://" not in out_dir
        out["report_file"] = report
        out["report"] = (
            os.path.relpath(os.path.abspath(report), os.path.abspath(out_dir)) if local else None
        )
    return out


def _common(values):
    """The one value of ``values`` (``None``s left out), or ``None`` if there are several."""
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else None


def _dataset(evaluations: dict) -> dict:
    """The compared evaluations' data set: its name and fingerprint, and ``differs``
    (what differs) where they do not share one."""
    names = [e.get("dataset_name") for e in evaluations.values()]
    prints = [e.get("dataset_fingerprint") for e in evaluations.values()]
    out = {"name": _common(names), "fingerprint": _common(prints)}
    if len(set(prints) - {None}) > 1 or len(set(names) - {None}) > 1:
        listed = ", ".join(
            f"{n}: {e.get('dataset_name')} {e.get('dataset_fingerprint')}"
            for n, e in evaluations.items()
        )
        out["differs"] = (
            "The evaluations name other data sets or fingerprints (their test images and "
            f"labels are the same, or compare would have refused them): {listed}."
        )
    return out


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
    print(f"The comparison on one page: {epath.Path(f.out) / REPORT_FILE}")
    return result


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string(
        "out", "comparison", "Folder for table.md, table.csv, comparison.json and report.html."
    )
    flags.DEFINE_integer("num_draws", 1000, "Bootstrap draws.")
    flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
    app.run(lambda argv: main(argv) and None)
