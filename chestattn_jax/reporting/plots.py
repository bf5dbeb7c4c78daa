"""PNG figures: ROC curves, attention overlays (paper Fig. 2), average class masks (Fig. 3).

Everything draws on a ``matplotlib.figure.Figure`` with the Agg canvas, never on
pyplot, so no display or global backend is involved and figures can be written
from any thread. Maps are shown as in the paper: resized bilinearly onto the
image, divided by their maximum, in the ``jet`` colour map over the grayscale
radiograph.
"""

from __future__ import annotations

import io
import math
import os
import textwrap

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chestattn_jax.localization_metrics import upsample_map
from chestattn_jax.workdir import write_bytes

DPI = 100
PANEL_INCHES = 2.2  # one image panel


def _new_figure(rows: int, cols: int, panel: float = PANEL_INCHES, extra_h: float = 0.0):
    fig = Figure(figsize=(cols * panel, rows * panel + extra_h), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _save(fig, path) -> str:
    """Writes the PNG to ``path``, a local or ``gs://`` path (through etils.epath)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, buffer.getvalue())
    return os.fspath(path)


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _image_panel(ax, image, title: str = "", heatmap=None, alpha: float = 0.45):
    """``image`` ``(S, S)`` (or ``(S, S, 1)``) grayscale with an optional ``(h, w)`` map."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., 0]
    ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else None)
    if heatmap is not None:
        ax.imshow(upsample_map(heatmap, image.shape[0]), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    # Long titles (several findings) wrap instead of running into the next panel.
    ax.set_title("\n".join(textwrap.wrap(title, 32, break_on_hyphens=False)), fontsize=7)
    ax.set_axis_off()


def roc_curves(labels, probs, mask, class_names, path: str, aucs: dict | None = None) -> str:
    """One ROC panel per class (unmasked examples only) in a grid; returns ``path``."""
    # scikit-learn (with SciPy) takes about 1 s to import: only where ROC curves are drawn,
    # not in every command that imports this module.
    from sklearn.metrics import roc_curve

    labels, probs, mask = np.asarray(labels), np.asarray(probs), np.asarray(mask)
    rows, cols = _grid(len(class_names))
    fig, axes = _new_figure(rows, cols, panel=2.4)
    for j, name in enumerate(class_names):
        ax = axes.flat[j]
        keep = mask[:, j] > 0
        y, p = labels[keep, j], probs[keep, j]
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        if y.size and y.min() != y.max():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, lw=1.4)
            auc = None if aucs is None else aucs.get(name)
            label = f"{name}\nAUC {auc:.3f}" if auc is not None else name
        else:
            label = f"{name}\n(one label value only)"
        ax.set_title(f"{label}  (n+={int(y.sum())})", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_xlabel("false positive rate", fontsize=6)
        ax.set_ylabel("true positive rate", fontsize=6)
    for ax in axes.flat[len(class_names) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def image_overlays(image, maps, class_names, probs, path: str, labels=None, title="") -> str:
    """One image and its attention: the image, then one panel per class.

    ``maps`` is ``(k, h, w)`` (class-based: each class its own map) or ``(h, w)``
    (image-based: one map, drawn once); ``probs`` ``(k,)``; ``labels`` ``(k,)`` or
    None (unknown, as in ``--mode=predict``). Returns ``path``.
    """
    maps = None if maps is None else np.asarray(maps)
    probs = np.asarray(probs)
    per_class = maps is not None and maps.ndim == 3
    panels = 1 + (len(class_names) if per_class else int(maps is not None))
    rows, cols = _grid(panels)
    fig, axes = _new_figure(rows, cols, extra_h=0.3)
    _image_panel(axes.flat[0], image, "input")
    if per_class:
        for j, name in enumerate(class_names):
            mark = "" if labels is None else (" [+]" if labels[j] else "")
            _image_panel(axes.flat[1 + j], image, f"{name}{mark}\np={probs[j]:.2f}", maps[j])
    elif maps is not None:
        top = np.argsort(-probs)[:3]
        text = ", ".join(f"{class_names[j]} {probs[j]:.2f}" for j in top)
        _image_panel(axes.flat[1], image, f"shared map\n{text}", maps)
    for ax in axes.flat[panels:]:
        ax.set_axis_off()
    if maps is None:  # resnet: no attention, list the probabilities instead
        text = "\n".join(f"{c}: {p:.3f}" for c, p in zip(class_names, probs, strict=True))
        axes.flat[0].text(1.05, 1.0, text, transform=axes.flat[0].transAxes, fontsize=6, va="top")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def attention_rows(examples: list[dict], class_names, path: str) -> str:
    """Paper Fig. 2: one row per test image: the image, then the image-based map (when
    given), then the class-based map of each positive class.

    Each example: ``{"image": (S, S), "labels": (k,), "image_map": (h, w) or None,
    "class_maps": (k, h, w) or None, "title": str}``.
    """
    widths = []
    for ex in examples:
        positives = np.flatnonzero(ex["labels"])
        widths.append(
            1
            + (ex.get("image_map") is not None)
            + len(positives) * (ex.get("class_maps") is not None)
        )
    cols = max(widths) if widths else 1
    fig, axes = _new_figure(max(len(examples), 1), cols)
    for r, ex in enumerate(examples):
        positives = np.flatnonzero(ex["labels"])
        names = ", ".join(class_names[j] for j in positives)
        _image_panel(axes[r, 0], ex["image"], ex.get("title") or names)
        c = 1
        if ex.get("image_map") is not None:
            _image_panel(axes[r, c], ex["image"], "image-based", ex["image_map"])
            c += 1
        if ex.get("class_maps") is not None:
            for j in positives:
                _image_panel(
                    axes[r, c], ex["image"], f"class-based: {class_names[j]}", ex["class_maps"][j]
                )
                c += 1
        for ax in axes[r, c:]:
            ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def fig2_attention(
    path: str, class_names, index, images, labels, image_maps=None, class_maps=None
) -> str:
    """Paper Fig. 2 (:func:`attention_rows`) for the test images ``index``: ``images``
    ``(n, S, S)``, ``labels`` ``(n, k)``, and the image-based model's maps ``(n, h, w)``,
    the class-based model's ``(n, k, h, w)`` or both (one model's evaluation, or
    ``compare`` with both models). Each row is titled with its index and findings."""
    rows = [
        {
            "image": images[r],
            "labels": labels[r],
            "image_map": None if image_maps is None else image_maps[r],
            "class_maps": None if class_maps is None else class_maps[r],
            "title": f"test #{int(i)}: "
            + ", ".join(class_names[j] for j in np.flatnonzero(labels[r])),
        }
        for r, i in enumerate(index)
    ]
    return attention_rows(rows, class_names, path)


def average_masks(masks: dict, counts: dict, path: str, title: str = "") -> str:
    """Paper Fig. 3: each class's average map over test images whose only positive label
    is that class. ``masks``: ``{class: (h, w) or None}``; ``counts``: images averaged."""
    names = list(masks)
    rows, cols = _grid(len(names))
    fig, axes = _new_figure(rows, cols, extra_h=0.3)
    for ax, name in zip(axes.flat, names, strict=False):
        m = masks[name]
        if m is None:
            ax.text(
                0.5, 0.5, "no image\nwith only\nthis finding", ha="center", va="center", fontsize=7
            )
            ax.set_axis_off()
            ax.set_title(name, fontsize=7)
            continue
        m = np.asarray(m, np.float64)
        ax.imshow(m / m.max() if m.max() > 0 else m, cmap="jet", vmin=0, vmax=1)
        ax.set_title(f"{name} (n={counts[name]})", fontsize=7)
        ax.set_axis_off()
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def average_mask_rows(models: dict, class_names, path: str) -> str:
    """Fig. 3 for several models: one row per model (``{name: (masks (k, h, w), counts
    (k,))}``), one column per class; a class with no single-finding image is blank."""
    fig, axes = _new_figure(max(len(models), 1), len(class_names), panel=1.6)
    for r, (name, (masks, counts)) in enumerate(models.items()):
        for j, c in enumerate(class_names):
            ax = axes[r, j]
            ax.set_axis_off()
            ax.set_title(
                f"{c} (n={int(counts[j])})" if r == 0 else f"n={int(counts[j])}", fontsize=6
            )
            if counts[j]:
                m = np.asarray(masks[j], np.float64)
                ax.imshow(m / m.max() if m.max() > 0 else m, cmap="jet", vmin=0, vmax=1)
        axes[r, 0].text(
            -0.1,
            0.5,
            name,
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=7,
        )
    fig.tight_layout()
    return _save(fig, path)


def forest_plot(differences: dict, class_names, path: str, title: str = "") -> str:
    """Per-class paired AUC differences with their intervals, one panel per comparison
    (``{"class - image": paired_auc_difference(...) result, ...}``), the mean last;
    a line at 0. Classes without a defined difference are left blank. Where a summary
    has ``per_seed`` point estimates (several training seeds combined), each is marked
    with a small cross beside the combined estimate."""
    names = list(differences)
    rows = [*class_names, "mean"]
    fig = Figure(figsize=(3.2 * len(names) + 1.2, 0.28 * len(rows) + 1.0), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True, squeeze=False)[0])
    y = np.arange(len(rows))[::-1]
    for ax, name in zip(axes, names, strict=True):
        d = differences[name]
        for yi, c in zip(y, rows, strict=True):
            s = d["mean"] if c == "mean" else d["classes"][c]
            if s["difference"] is None:
                continue
            color = "black" if c == "mean" else ("tab:blue" if s["ci"][0] > 0 else "0.35")
            ax.plot(s["ci"], [yi, yi], color=color, lw=1.2)
            ax.plot([s["difference"]], [yi], "s" if c == "mean" else "o", color=color, ms=4)
            seeds = [x for x in s.get("per_seed") or () if x is not None]
            if len(seeds) > 1:
                ax.plot(seeds, [yi] * len(seeds), "x", color="tab:orange", ms=3.5, mew=0.9)
        ax.axvline(0.0, color="0.6", lw=0.8, ls="--")
        ax.set_title(f"AUC {name}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("difference [95% CI]", fontsize=7)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(rows, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def reliability_diagrams(curves: dict, path: str) -> str:
    """A reliability diagram per class (``{class: {"before": curve, "after": curve}}``, each
    :func:`chestattn_jax.calibration.reliability_curve`'s): the fraction of positives
    against the mean probability of each bin, before and after recalibration, beside the
    diagonal of perfect calibration; marker area by bin count."""
    names = list(curves)
    rows, cols = _grid(len(names), max_cols=5)
    fig, axes = _new_figure(rows, cols)
    axes = axes.ravel()
    styles = {"before": ("tab:red", "o"), "after": ("tab:blue", "s")}
    for ax, name in zip(axes, names, strict=False):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        for when, (color, marker) in styles.items():
            c = curves[name].get(when)
            if not c:
                continue
            pts = [
                (m, f, n)
                for m, f, n in zip(c["mean_prob"], c["frac_pos"], c["count"], strict=True)
                if m is not None and f is not None
            ]
            if not pts:
                continue
            m, f, n = (np.asarray(v, float) for v in zip(*pts, strict=True))
            ax.plot(m, f, color=color, lw=0.9, label=when)
            ax.scatter(m, f, s=6 + 30 * n / n.max(), color=color, marker=marker)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("mean probability", fontsize=6)
        ax.set_ylabel("fraction positive", fontsize=6)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def failure_review(rows: list[dict], per_kind: int, path: str) -> str:
    """The failure review: one row per class, ``per_kind`` panels of its false positives
    then ``per_kind`` of its false negatives, each the image with its map over it (where
    given) and its title; the row's class and note (threshold, counts) at its left. Each
    row: ``{"name", "note", "false_positives": [...], "false_negatives": [...]}``, each
    example ``{"image": (S, S), "map": (h, w) or None, "title": str}`` (each line of the
    title kept to its last 21 characters); a row with
    ``"reason"`` (a class without a threshold) shows it instead of examples. Returns
    ``path``."""
    per_kind = max(per_kind, 1)
    fig, axes = _new_figure(max(len(rows), 1), 2 * per_kind, panel=1.7, extra_h=0.4)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(rows):
        if row.get("reason"):
            text = "\n".join(textwrap.wrap(f"no threshold: {row['reason']}", 60))
            # Across the row's empty panels: left out of the layout, which keeps them apart.
            axes[r, 0].text(
                0.0,
                0.5,
                text,
                transform=axes[r, 0].transAxes,
                ha="left",
                va="center",
                fontsize=7,
                color="0.3",
                in_layout=False,
            )
        for k, (kind, what) in enumerate(
            (("false_positives", "false positive"), ("false_negatives", "false negative"))
        ):
            examples = row.get(kind) or []
            for c, ex in enumerate(examples[:per_kind]):
                ax = axes[r, k * per_kind + c]
                _image_panel(ax, ex["image"], "", ex.get("map"))
                ax.set_title(
                    "\n".join(_shorten(t, 22) for t in ex["title"].split("\n")), fontsize=6
                )
            if not examples and not row.get("reason"):
                axes[r, k * per_kind].text(
                    0.5,
                    0.5,
                    f"no {what}",
                    transform=axes[r, k * per_kind].transAxes,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.4",
                    in_layout=False,
                )
        label = "\n".join([row["name"], *textwrap.wrap(row.get("note", ""), 22)])
        axes[r, 0].text(
            -0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7
        )
    fig.suptitle(
        "Left: false positives, most confident first.  Right: false negatives, most "
        "confident first.",
        fontsize=8,
    )
    fig.tight_layout()
    return _save(fig, path)


def _shorten(text: str, width: int) -> str:
    """``text``, or its last ``width - 1`` characters after an ellipsis (an example id is
    told apart by its end: NIH's ``..._001.png``, CheXpert's ``.../view1_frontal.jpg``)."""
    return text if len(text) <= width else "\u2026" + text[-(width - 1) :]
