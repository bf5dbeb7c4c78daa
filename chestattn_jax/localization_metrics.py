"""Where do the attention maps look? The pointing game and IoU / IoBB against truth.

Truth is a mask per class and image: the phantoms' finding masks, or NIH's boxes
filled in. The class-based model has one map per class (gate 3); the image-based
model has one map for all classes, scored against each present class. Each present
class with a non-empty mask is a *finding*, and every score is kept per finding.

- Pointing game, two ways:

  * pixel (``pixel_hit``, the headline): the map is resized bilinearly to the
    ``(S, S)`` image (:func:`upsample_map`; half-pixel centres and clamped edges, as
    cheXlocalize's ``F.interpolate(..., mode="bilinear", align_corners=False)``), and
    the finding is a hit when the map's maximum pixel lies inside the truth. Where
    several pixels share the maximum, the hit is the share of them that do: the expected
    hit of one drawn at random, which for a unique maximum is cheXlocalize's ``argmax``,
    and for a flat map the truth's share of the image. Such plateaus are common: the
    clamped edge makes one whenever the maximum cell lies on the map's border (the
    pixels between its centre and the border share its value), and ``np.argmax`` would
    then take the plateau's first pixel in raster order, favouring the top and left.
  * cell (``cell_hit``, kept as ``pointing_game`` for scripts written for earlier
    releases): a map of ``(h, w)`` cells covers the image; its maximum cell counts as
    a hit when any truth pixel lies inside it. Lenient: on a 6 x 6 map at 96 px a
    16 x 16 cell that touches a finding by one pixel scores a hit.

  The pixel game is the headline because it is the stricter one and the one the
  literature reports (cheXlocalize, and the pointing game of Zhang et al. it follows):
  a coarse map earns a hit only where its bilinear peak falls on the finding.
- Overlap: the upsampled map, divided by its maximum, is thresholded at
  ``map_threshold`` (0.5 by default) into a predicted region R. With truth T,
  IoU = |R ∩ T| / |R ∪ T| and IoBB = |R ∩ T| / |R| (ChestX-ray8's "intersection over
  the detected B-box", here over the detected region). As in ChestX-ray8's Table 3, a
  finding counts as localised at threshold t when its IoU (or IoBB) is at least t; we
  report that accuracy at t = 0.1, 0.25, 0.5 and the mean IoU and IoBB.
- mIoU as cheXlocalize scores segmentations, two ways (``iou_otsu``, ``iou_tuned``): the
  upsampled map is rescaled to [0, 1] by its minimum and maximum and thresholded by
  Otsu's method on its 256 levels (:func:`otsu_region`, cheXlocalize's
  ``cv2.threshold(..., THRESH_OTSU)`` on ``np.uint8(255 * map)``), or at a per-class
  threshold from :data:`MIOU_THRESHOLDS` (cheXlocalize's grid, 0.2 to 0.7) chosen to
  maximise the class's mIoU on the validation split (:meth:`LocalizationScores.tune`).
  The mIoU of a class is the mean IoU over its findings. A flat map (the uniform
  baseline) favours no pixel: its region is the whole image.

Two baselines are scored the same way beside every model
(``evaluation/evaluators/localization.py``): a *class prior*, each class's average
truth mask as a fixed map (:class:`ClassPrior`, per class from the training split or,
for a class without truth there, the evaluated split left one out:
:func:`build_class_prior`), and a *uniform* map (:meth:`LocalizationScores.add_uniform`).
A model's map earns credit only where it beats knowing where a class usually lies.

The per-finding scores (:class:`FindingTable`, written as ``localization.npz``) are what
:func:`bootstrap_findings` resamples: hit rates and accuracies with patient-bootstrap
intervals, pooled over folds and weighted by findings, and paired differences.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chestattn_jax import files
from chestattn_jax.metrics import (
    _class_mean,
    _interval,
    _pair_summary,
    fold_draw_weights,
    seed_draws,
)

OVERLAP_THRESHOLDS = (0.1, 0.25, 0.5)
# What is kept of each finding, beside its example and class: the cell and pixel
# pointing-game hits (expected hits for the uniform map), the IoU and IoBB, and the IoU of
# the map thresholded by Otsu's method and at its class's tuned threshold.
FINDING_FIELDS = ("cell_hit", "pixel_hit", "iou", "iobb", "iou_otsu", "iou_tuned")
# The per-finding columns the evaluator bootstraps: both pointing games and the IoU / IoBB
# accuracies (a ``field@t`` column is 1 where ``field`` >= t).
RATE_COLUMNS = (
    "pixel_hit",
    "cell_hit",
    *(f"{name}@{t}" for name in ("iou", "iobb") for t in OVERLAP_THRESHOLDS),
)
# The mIoU columns, bootstrapped beside them: the IoU of the map thresholded by Otsu's
# method and at the class's threshold tuned on validation (NaN where it has none).
MIOU_COLUMNS = ("iou_otsu", "iou_tuned")
# The thresholds a class's mIoU is tuned over: cheXlocalize's (np.arange(0.2, 0.8, 0.1)).
MIOU_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# Where the class prior of a class comes from (:func:`build_class_prior`).
TRAINING_SPLIT = "training split"
LEAVE_ONE_OUT = "evaluated split, leave-one-out"


def argmax_cells(maps) -> np.ndarray:
    """``(..., h, w)`` maps -> ``(..., 2)`` (row, col) of each map's maximum."""
    maps = np.asarray(maps)
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w).argmax(-1)
    return np.stack([flat // w, flat % w], axis=-1)


def _cell_bounds(cells: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First and end pixel of each of ``cells`` map cells along an axis of ``size`` pixels
    (the end rounded up: a cell covers every pixel it touches)."""
    r = np.arange(cells)
    return (r * size) // cells, -(-((r + 1) * size) // cells)


def cell_hits(cell, map_shape, truth_mask) -> bool:
    """Whether any pixel of ``truth_mask`` ``(S, S)`` lies in map cell ``(row, col)``."""
    r, c = int(cell[0]), int(cell[1])
    y0, y1 = _cell_bounds(map_shape[0], truth_mask.shape[0])
    x0, x1 = _cell_bounds(map_shape[1], truth_mask.shape[1])
    return bool(truth_mask[y0[r] : y1[r], x0[c] : x1[c]].any())


def cells_hit(truth_mask, map_shape) -> np.ndarray:
    """``(h, w)`` bool: :func:`cell_hits` of every cell at once, from an integral image."""
    integral = np.zeros((truth_mask.shape[0] + 1, truth_mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = np.asarray(truth_mask, bool).cumsum(0).cumsum(1)
    y0, y1 = _cell_bounds(map_shape[0], truth_mask.shape[0])
    x0, x1 = _cell_bounds(map_shape[1], truth_mask.shape[1])
    inside = (
        integral[np.ix_(y1, x1)]
        - integral[np.ix_(y0, x1)]
        - integral[np.ix_(y1, x0)]
        + integral[np.ix_(y0, x0)]
    )
    return inside > 0


def upsample_map(m, size: int) -> np.ndarray:
    """An ``(h, w)`` map -> ``(size, size)`` bilinear, divided by its maximum (to [0, 1])."""
    from PIL import Image

    m = np.asarray(m, np.float32)
    up = np.asarray(Image.fromarray(m, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    top = float(up.max())
    return up / top if top > 0 else up


def region_overlap(region, truth) -> tuple[float, float]:
    """``(IoU, IoBB)`` of two ``(S, S)`` bool masks; IoBB divides by ``region``'s area."""
    inter = float(np.logical_and(region, truth).sum())
    union = float(np.logical_or(region, truth).sum())
    area = float(region.sum())
    return (inter / union if union else 0.0), (inter / area if area else 0.0)


def cell_means(a, map_shape) -> np.ndarray:
    """``(..., S, S)`` -> ``(..., h, w)``: the mean of ``a`` over each map cell's pixels
    (cell ``r`` spans rows ``r*S//h`` to ``(r+1)*S//h``; exact when ``h`` divides ``S``)."""
    a = np.asarray(a, np.float64)
    h, w = map_shape
    size_y, size_x = a.shape[-2:]
    ys = (np.arange(h) * size_y) // h
    xs = (np.arange(w) * size_x) // w
    sums = np.add.reduceat(np.add.reduceat(a, ys, axis=-2), xs, axis=-1)
    heights = np.diff(np.append(ys, size_y))
    widths = np.diff(np.append(xs, size_x))
    return sums / (heights[:, None] * widths[None, :])


def pixel_hit(upsampled, truth_mask) -> float:
    """The pixel pointing game of an ``(S, S)`` upsampled map against an ``(S, S)`` truth
    mask: 1.0 when its maximum pixel lies in the truth, 0.0 when not; where several pixels
    share the maximum, the share of them in the truth (the expected hit of one of them
    drawn at random)."""
    up = np.asarray(upsampled)
    return float(np.asarray(truth_mask, bool)[up == up.max()].mean())


def rescaled(upsampled) -> np.ndarray | None:
    """An ``(S, S)`` map rescaled to [0, 1] by its minimum and maximum; None if flat."""
    up = np.asarray(upsampled, np.float64)
    low, high = float(up.min()), float(up.max())
    return None if high <= low else (up - low) / (high - low)


def otsu_threshold(levels) -> int:
    """Otsu's threshold of uint8 ``levels``: the ``t`` in 0..255 that maximises the
    between-class variance of ``levels <= t`` and ``levels > t`` (the first such, as
    OpenCV's ``THRESH_OTSU`` picks it); 0 where no ``t`` splits them (one level)."""
    hist = np.bincount(np.asarray(levels, np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    w0 = np.cumsum(p)  # the share at or below t
    m0 = np.cumsum(p * np.arange(256))  # the first moment at or below t
    total = m0[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between) | (w0 <= 0) | (w0 >= 1)] = -1.0
    return int(np.argmax(between))


def otsu_region(upsampled) -> np.ndarray:
    """``(S, S)`` bool: the map's Otsu segmentation as cheXlocalize makes it: rescaled to
    [0, 1] (:func:`rescaled`), as ``np.uint8(255 * map)`` (truncated), above Otsu's
    threshold of those levels; the whole image for a flat map."""
    r = rescaled(upsampled)
    if r is None:
        return np.ones(np.shape(upsampled), bool)
    levels = (255.0 * r).astype(np.uint8)
    return levels > otsu_threshold(levels)


def threshold_ious(upsampled, truth, thresholds=MIOU_THRESHOLDS) -> np.ndarray:
    """``(T,)`` IoU with ``truth`` of the map rescaled to [0, 1] (:func:`rescaled`) above
    each threshold; a flat map's region is the whole image at every threshold."""
    r = rescaled(upsampled)
    truth = np.asarray(truth, bool)
    if r is None:
        return np.full(len(thresholds), float(truth.mean()))
    return np.asarray([region_overlap(r > t, truth)[0] for t in thresholds])


class LocalizationScores:
    """Accumulates the findings' scores: per finding its example and class, the cell and
    pixel pointing-game hits, IoU and IoBB (:data:`FINDING_FIELDS`).

    Fed one image at a time (:meth:`add`), so truth masks never pile up in memory.
    """

    def __init__(self, class_names, map_threshold: float = 0.5):
        self.class_names = list(class_names)
        self.map_threshold = map_threshold
        # (example, class, cell_hit, pixel_hit, iou, iobb, iou_otsu) per finding
        self._findings = []
        self._curves = []  # (len(MIOU_THRESHOLDS),) IoU at each threshold, per finding
        # (k,) index into MIOU_THRESHOLDS of each class's tuned threshold, -1 for none;
        # None until tune().
        self.tuned = None
        self._images = 0

    def _example(self, example) -> int:
        """``example``, or without one the number of images added before this one."""
        self._images += 1
        return self._images - 1 if example is None else int(example)

    def add(self, maps, truth_masks, labels, example=None) -> None:
        """One image: ``maps`` ``(k, h, w)`` per class or ``(h, w)`` shared, ``truth_masks``
        ``(k, S, S)``, ``labels`` ``(k,)``. Present classes with a non-empty mask count.
        ``example`` identifies the image in :meth:`findings` (its index in the evaluated
        split; default: the order of the calls)."""
        example = self._example(example)
        maps = np.asarray(maps)
        for j in np.flatnonzero(np.asarray(labels)):
            truth = np.asarray(truth_masks[j], bool)
            if not truth.any():
                continue
            m = maps if maps.ndim == 2 else maps[j]
            cell = float(cell_hits(argmax_cells(m), m.shape, truth))
            up = upsample_map(m, truth.shape[0])
            region = up >= self.map_threshold
            otsu = region_overlap(otsu_region(up), truth)[0]
            self._findings.append(
                (example, j, cell, pixel_hit(up, truth), *region_overlap(region, truth), otsu)
            )
            self._curves.append(threshold_ious(up, truth))

    def add_uniform(self, map_shape, truth_masks, labels, example=None) -> None:
        """The same scores for a uniform map of ``map_shape``, which favours no cell.

        Its maximum is every cell, so its cell hit is the expected hit of a cell drawn at
        random: the fraction of cells holding a truth pixel; its maximum is every pixel, so
        its pixel hit is the truth's share of the image. Its region is the whole image
        (at every threshold, Otsu's too): IoU = IoBB = that share too.
        """
        example = self._example(example)
        for j in np.flatnonzero(np.asarray(labels)):
            truth = np.asarray(truth_masks[j], bool)
            if not truth.any():
                continue
            share = float(truth.mean())
            cell = float(cells_hit(truth, map_shape).mean())
            self._findings.append((example, j, cell, share, share, share, share))
            self._curves.append(np.full(len(MIOU_THRESHOLDS), share))

    def best_thresholds(self) -> np.ndarray:
        """``(k,)`` per class the index into :data:`MIOU_THRESHOLDS` of the threshold with
        the highest mIoU over this split's findings of the class (the first, at a tie);
        -1 for a class without findings."""
        curves = np.asarray(self._curves, np.float64).reshape(-1, len(MIOU_THRESHOLDS))
        classes = np.asarray([f[1] for f in self._findings], np.int64)
        best = np.full(len(self.class_names), -1, np.int64)
        for j in np.unique(classes):
            best[j] = int(np.argmax(curves[classes == j].mean(0)))
        return best

    def tune(self, validation: LocalizationScores) -> None:
        """Takes each class's threshold for ``iou_tuned`` from the findings of
        ``validation`` (the same source's scores on the validation split): the one that
        maximises the class's mIoU there (:meth:`best_thresholds`)."""
        self.tuned = validation.best_thresholds()

    def tuned_thresholds(self) -> dict:
        """``{class: threshold or None}`` chosen by :meth:`tune` (None: the class had no
        validation finding, or nothing was tuned)."""
        tuned = self.tuned if self.tuned is not None else [-1] * len(self.class_names)
        return {
            c: None if t < 0 else MIOU_THRESHOLDS[int(t)]
            for c, t in zip(self.class_names, tuned, strict=True)
        }

    def findings(self) -> dict:
        """``{"example": (F,) int64, "class": (F,) int64, field: (F,) float64 for each of
        FINDING_FIELDS}``, one entry per finding in the order added; ``iou_tuned`` is NaN
        where the finding's class has no tuned threshold."""
        measured = len(FINDING_FIELDS) - 1
        rows = np.asarray(self._findings, np.float64).reshape(-1, 2 + measured)
        out = {"example": rows[:, 0].astype(np.int64), "class": rows[:, 1].astype(np.int64)}
        out.update({f: rows[:, 2 + i] for i, f in enumerate(FINDING_FIELDS[:measured])})
        curves = np.asarray(self._curves, np.float64).reshape(-1, len(MIOU_THRESHOLDS))
        tuned = np.full(len(rows), np.nan)
        if self.tuned is not None and len(rows):
            t = self.tuned[out["class"]]
            ok = t >= 0
            tuned[ok] = curves[np.flatnonzero(ok), t[ok]]
        out["iou_tuned"] = tuned
        return out

    def table(self, example_ids, patient_ids) -> FindingTable:
        """The findings as a :class:`FindingTable`, each example's ids read from the
        evaluated split's per-example ``example_ids`` and ``patient_ids`` (a
        :class:`~chestattn_jax.evaluation.inference_pass.Record`'s, whose row ``i`` is
        the split's example ``i``)."""
        f = self.findings()
        example_ids, patient_ids = np.asarray(example_ids), np.asarray(patient_ids)
        if f["example"].size and f["example"].max() >= min(len(example_ids), len(patient_ids)):
            raise ValueError(
                f"example_ids / patient_ids: {len(example_ids)} / {len(patient_ids)} examples, "
                f"but a finding is on example {int(f['example'].max())}."
            )
        return FindingTable(
            example_index=f["example"],
            class_index=f["class"],
            example_ids=example_ids[f["example"]].astype(str),
            patient_ids=patient_ids[f["example"]].astype(str),
            values={name: f[name] for name in FINDING_FIELDS},
            class_names=tuple(self.class_names),
            map_threshold=float(self.map_threshold),
        )

    def _per_class(self, field: str, threshold: float | None = None) -> dict:
        f = self.findings()
        values = f[field] if threshold is None else (f[field] >= threshold).astype(float)
        out = {}
        for j, name in enumerate(self.class_names):
            own = values[f["class"] == j]
            out[name] = float(own.mean()) if own.size and not np.isnan(own).any() else None
        return out

    @staticmethod
    def _mean(per_class: dict):
        defined = [v for v in per_class.values() if v is not None]
        return float(np.mean(defined)) if defined else None

    def counts(self) -> dict:
        found = np.bincount(self.findings()["class"], minlength=len(self.class_names))
        return dict(zip(self.class_names, found.tolist(), strict=True))

    def pointing_game(self, pixel: bool = False) -> dict:
        """``{"hit_rate": {class: rate or None}, "mean_hit_rate", "count"}`` of the cell
        pointing game, or with ``pixel`` of the pixel one."""
        rates = self._per_class("pixel_hit" if pixel else "cell_hit")
        return {"hit_rate": rates, "mean_hit_rate": self._mean(rates), "count": self.counts()}

    def overlap(self, thresholds=OVERLAP_THRESHOLDS) -> dict:
        """``{"iou": {class: mean}, "mean_iou", "iou_accuracy": {t: {class: fraction with
        IoU >= t}}, "mean_iou_accuracy": {t: mean over classes}}``, the same for ``iobb``,
        ``miou_otsu`` / ``miou_tuned`` (``{class: mIoU}``) with their means
        ``mean_miou_otsu`` / ``mean_miou_tuned`` and ``tuned_threshold`` (``{class: t}``),
        plus ``count`` and ``map_threshold``. A class with no finding (or, for
        ``miou_tuned``, no tuned threshold) has ``None``."""
        out = {"map_threshold": self.map_threshold, "count": self.counts()}
        for name in ("iou", "iobb"):
            out[name] = self._per_class(name)
            out[f"mean_{name}"] = self._mean(out[name])
            acc = {str(t): self._per_class(name, t) for t in thresholds}
            out[f"{name}_accuracy"] = acc
            out[f"mean_{name}_accuracy"] = {t: self._mean(a) for t, a in acc.items()}
        for how in ("otsu", "tuned"):
            out[f"miou_{how}"] = self._per_class(f"iou_{how}")
            out[f"mean_miou_{how}"] = self._mean(out[f"miou_{how}"])
        out["tuned_threshold"] = self.tuned_thresholds()
        return out


def score_maps(maps, truth_masks, labels, class_names, map_threshold=0.5) -> LocalizationScores:
    """Scores a whole array of maps.

    Args:
      maps: ``(N, k, h, w)`` per-class maps, or ``(N, h, w)`` one map per image
        (then scored against every present class).
      truth_masks: ``(N, k, S, S)`` bool truth masks.
      labels: ``(N, k)`` in {0, 1}; only present classes with a non-empty mask count.
      class_names: ``k`` names.
    """
    scores = LocalizationScores(class_names, map_threshold)
    for t in range(len(labels)):
        scores.add(maps[t], truth_masks[t], labels[t])
    return scores


def pointing_game(maps, truth_masks, labels, class_names, pixel: bool = False) -> dict:
    """Per-class hit rate of the cell pointing game, or with ``pixel`` of the pixel one;
    arguments as :func:`score_maps`."""
    return score_maps(maps, truth_masks, labels, class_names).pointing_game(pixel)


def overlap_scores(
    maps, truth_masks, labels, class_names, map_threshold=0.5, thresholds=OVERLAP_THRESHOLDS
) -> dict:
    """Per-class IoU / IoBB of thresholded maps; arguments as :func:`score_maps`."""
    return score_maps(maps, truth_masks, labels, class_names, map_threshold).overlap(thresholds)


# ------------------------------------------------------------------ the findings on disk


@dataclasses.dataclass(frozen=True)
class FindingTable:
    """One source's scores (a model's maps, or a baseline's) per finding of an evaluated
    split. ``example_index`` is the example's index in the split, which is its row in the
    evaluation's :class:`~chestattn_jax.evaluation.inference_pass.Record`; its ids are
    the record's (strings)."""

    example_index: np.ndarray  # (F,) int64
    class_index: np.ndarray  # (F,) int64: a column of class_names
    example_ids: np.ndarray  # (F,) str
    patient_ids: np.ndarray  # (F,) str
    values: dict  # each of FINDING_FIELDS: (F,) float64
    class_names: tuple[str, ...]
    map_threshold: float

    def __len__(self) -> int:
        return len(self.class_index)

    def column(self, name: str) -> np.ndarray:
        """``(F,)`` float64: a field of :data:`FINDING_FIELDS`, or ``field@t``: 1.0 where
        the field is at least ``t`` (``iou@0.25``), else 0.0."""
        field, _, threshold = name.partition("@")
        if field not in self.values:
            raise ValueError(
                f"columns: no {name!r}; expected one of {', '.join(FINDING_FIELDS)}, "
                "optionally with @threshold (iou@0.25)."
            )
        values = self.values[field]
        return values if not threshold else (values >= float(threshold)).astype(np.float64)

    def keys(self) -> np.ndarray:
        """``(F, 2)`` (example, class) of each finding, sorted: what two tables must share
        to be compared finding by finding."""
        pairs = np.stack([self.example_index, self.class_index], axis=1)
        return pairs[np.lexsort(pairs.T[::-1])]


def save_findings(path, tables: dict) -> None:
    """Writes ``{source: FindingTable}`` of one evaluation (the same findings, in the same
    order, for every source) as one ``.npz``: ``example_index``, ``class_index``,
    ``example_ids``, ``patient_ids``, ``class_names``, ``map_threshold``, ``sources``,
    and ``<source>.<field>`` per source and field of :data:`FINDING_FIELDS`."""
    first = next(iter(tables.values()))
    for name, t in tables.items():
        same = np.array_equal(t.example_index, first.example_index) and np.array_equal(
            t.class_index, first.class_index
        )
        if not same or t.class_names != first.class_names:
            raise ValueError(f"tables[{name!r}]: other findings than the first source's.")
    files.write_npz(
        path,
        example_index=first.example_index,
        class_index=first.class_index,
        # From lists: the narrowest string type (a Record's ids may be 21 characters wide).
        example_ids=np.asarray(np.asarray(first.example_ids).tolist(), dtype=str),
        patient_ids=np.asarray(np.asarray(first.patient_ids).tolist(), dtype=str),
        class_names=np.asarray(first.class_names, dtype=str),
        map_threshold=np.float64(first.map_threshold),
        sources=np.asarray(list(tables), dtype=str),
        **{f"{s}.{f}": t.values[f] for s, t in tables.items() for f in FINDING_FIELDS},
    )


def load_findings(path) -> dict:
    """``{source: FindingTable}`` from an ``.npz`` that :func:`save_findings` wrote (an
    evaluation's ``localization.npz``: sources ``model``, ``class_prior``, ``uniform``)."""
    arrays = files.read_npz(path)
    missing = [
        k
        for k in ("example_index", "class_index", "example_ids", "patient_ids", "sources")
        if k not in arrays
    ]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}; not a findings file.")
    older = [f"{s}.{f}" for s in arrays["sources"] for f in FINDING_FIELDS]
    older = [k for k in older if k not in arrays]
    if older:
        raise ValueError(
            f"{path}: no {', '.join(older[:2])}: written by an earlier release, before "
            "mIoU was scored. Evaluate the workdir again (--mode=evaluate)."
        )
    return {
        str(s): FindingTable(
            example_index=arrays["example_index"].astype(np.int64),
            class_index=arrays["class_index"].astype(np.int64),
            example_ids=arrays["example_ids"].astype(str),
            patient_ids=arrays["patient_ids"].astype(str),
            values={f: arrays[f"{s}.{f}"].astype(np.float64) for f in FINDING_FIELDS},
            class_names=tuple(str(c) for c in arrays["class_names"]),
            map_threshold=float(arrays["map_threshold"]),
        )
        for s in arrays["sources"]
    }


# ------------------------------------------------------------------ the class prior


class ClassPrior:
    """Each class's average truth mask: a fixed map per class that knows where a finding
    usually lies and nothing about the image. Scored like a model's maps, it is the
    baseline a model's localisation must beat.

    :meth:`add` the truth of the images it is built from; then :meth:`maps` gives the
    ``(k, h, w)`` maps at a model's map resolution. Built from the evaluated split itself,
    ``leave_out`` removes the scored image's own masks first.
    """

    def __init__(self, num_classes: int):
        self.sums = None
        self.counts = np.zeros(num_classes, np.int64)
        self._cell_sums = {}  # map shape -> (k, h, w) cell means of ``sums``

    def add(self, truth_masks, labels) -> None:
        masks = np.asarray(truth_masks, bool)
        if self.sums is None:
            self.sums = np.zeros(masks.shape, np.float64)
        for j in np.flatnonzero(np.asarray(labels)):
            if masks[j].any():
                self.sums[j] += masks[j]
                self.counts[j] += 1
        self._cell_sums.clear()

    def maps(self, map_shape, leave_out=None, leave_out_labels=None) -> np.ndarray:
        """``(k, h, w)``: each class's mean mask over its map cells (zeros without any).

        The cell means of the summed masks are computed once per map shape; leaving an
        image out subtracts its own masks' cell means (a cell mean is linear)."""
        k = len(self.counts)
        if self.sums is None:
            return np.zeros((k, *map_shape))
        shape = tuple(map_shape)
        if shape not in self._cell_sums:
            self._cell_sums[shape] = cell_means(self.sums, shape)
        sums, counts = self._cell_sums[shape], self.counts.astype(np.float64)
        if leave_out is not None:
            sums = sums.copy()
            own = np.asarray(leave_out, bool)
            for j in np.flatnonzero(np.asarray(leave_out_labels)):
                if own[j].any():
                    sums[j] -= cell_means(own[j], shape)
                    counts[j] -= 1
        return sums / np.maximum(counts, 1)[:, None, None]


@dataclasses.dataclass
class SplitPrior:
    """The class-prior baseline per class (:func:`build_class_prior`): ``training``'s map
    for the classes with truth in the training split, ``evaluated``'s left one out for
    the others (``leave_one_out``, ``(k,)`` bool)."""

    training: ClassPrior
    evaluated: ClassPrior | None
    leave_one_out: np.ndarray
    images: dict  # origin (TRAINING_SPLIT, LEAVE_ONE_OUT) -> images read for it

    def maps(self, map_shape, truth_masks, labels) -> np.ndarray:
        """``(k, h, w)`` maps to score the image with these ``truth_masks`` ``(k, S, S)``
        and ``labels`` ``(k,)``: its own masks are left out of the evaluated split's."""
        maps = self.training.maps(map_shape)
        if self.evaluated is None:
            return maps
        own = np.asarray(labels) * self.leave_one_out
        loo = self.evaluated.maps(map_shape, leave_out=truth_masks, leave_out_labels=own)
        return np.where(self.leave_one_out[:, None, None], loo, maps)

    def built_from(self, class_names) -> dict:
        """``{class: TRAINING_SPLIT or LEAVE_ONE_OUT}``."""
        origin = np.where(self.leave_one_out, LEAVE_ONE_OUT, TRAINING_SPLIT)
        return dict(zip(class_names, origin.tolist(), strict=True))

    def info(self, class_names) -> dict:
        """What ``metrics.json`` records of it: ``built_from_class`` (per class),
        ``built_from`` (the one origin of every class, or ``"per class"``), ``images``
        (read for it, in all) and ``images_from`` (per origin used)."""
        per_class = self.built_from(class_names)
        origins = set(per_class.values())
        return {
            "built_from": origins.pop() if len(origins) == 1 else "per class",
            "built_from_class": per_class,
            "images": int(sum(self.images.values())),
            "images_from": dict(self.images),
        }


def build_class_prior(training, evaluated, num_classes: int) -> SplitPrior:
    """The class prior: from the training split for every class with truth there, and for
    the others from the evaluated split, each image scored with its own masks left out.

    Args:
      training: iterable of the training split's truth (dicts with ``masks`` ``(k, S, S)``
        and ``labels`` ``(k,)``).
      evaluated: ``() ->`` iterable of the evaluated split's truth, read only when some
        class has no truth in the training split.
    """
    train, seen = ClassPrior(num_classes), 0
    for truth in training:
        train.add(truth["masks"], truth["labels"])
        seen += 1
    images = {TRAINING_SPLIT: seen} if seen else {}
    loo = train.counts == 0
    if not loo.any():
        return SplitPrior(train, None, loo, images)
    own, seen = ClassPrior(num_classes), 0
    for truth in evaluated():
        own.add(truth["masks"], np.asarray(truth["labels"]) * loo)
        seen += 1
    images[LEAVE_ONE_OUT] = seen
    return SplitPrior(train, own, loo, images)


# ------------------------------------------------------------------ intervals


def bootstrap_findings(
    folds,
    sources: dict,
    class_names,
    *,
    columns=RATE_COLUMNS,
    pairs=(),
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict, dict]:
    """Hit rates (and IoU / IoBB accuracies) per class with patient-bootstrap intervals,
    weighted by findings, and paired differences between sources.

    Each draw resamples every fold's patients (:func:`chestattn_jax.metrics.fold_draw_weights`)
    and, with several training seeds, the seeds (:func:`chestattn_jax.metrics.seed_draws`,
    the same picks for every source). A class's rate under one seed is the sum over every
    fold's findings of the class of value x its patient's multiplicity, over the sum of
    multiplicities: pooled over folds, so a fold weighs by its findings. A draw's rate is
    the mean of its picked seeds'. The mean over classes is over the classes with findings
    in the draw.

    Args:
      folds: per fold, its evaluated examples' patient ids (a Record's ``patient_ids``).
      sources: ``{name: [per training seed: [per fold: FindingTable]]}``; a source with
        one seed (a baseline) stands for every seed.
      class_names: the ``k`` classes of the tables' ``class_index``.
      columns: the per-finding values (:meth:`FindingTable.column`).
      pairs: ``(a, b)`` names of sources to compare on the same draws (a - b); both must
        hold the same findings (example and class) in every fold.

    Returns:
      ``(rates, differences)``: ``rates[name][column]`` is ``{"classes": {class: {"rate",
      "ci", "count", "undefined_draws"}}, "mean_rate", "mean_ci", "count", "num_draws",
      "level"}`` (``rate``: on the findings as given, mean over seeds; ``count``:
      findings, pooled over folds; None where a class has none); ``differences[(a, b)]
      [column]`` is :func:`chestattn_jax.metrics.paired_auc_difference`'s dict
      (``difference``, ``ci``, ``p_not_better`` per class and for the mean).
    """
    class_names = list(class_names)
    folds = [np.asarray(ids).astype(str) for ids in folds]
    num_seeds = _check_sources(folds, sources, class_names)
    for a, b in pairs:
        _check_paired(sources, a, b, num_seeds)
    draws = fold_draw_weights(folds, num_draws, seed)
    picks = seed_draws(num_seeds, num_draws, seed)
    scored = {
        name: finding_rates(per_seed, draws, picks, columns, len(class_names))
        for name, per_seed in sources.items()
    }
    rates = {}
    for name, per_seed in sources.items():
        counts = _counts(per_seed[0], len(class_names))
        rates[name] = {
            c: _rate_summary(scored[name][c], counts, class_names, num_draws, level)
            for c in columns
        }
    differences = {
        (a, b): {
            c: _pair_summary(scored[a][c], scored[b][c], class_names, num_draws, level)
            for c in columns
        }
        for a, b in pairs
    }
    return rates, differences


def _check_sources(folds, sources: dict, class_names) -> int:
    """The number of training seeds; a ``ValueError`` for tables that do not fit."""
    if not sources:
        raise ValueError("sources: empty; name at least one source of findings.")
    num_seeds = max(len(per_seed) for per_seed in sources.values())
    for name, per_seed in sources.items():
        if len(per_seed) not in (1, num_seeds):
            raise ValueError(
                f"sources[{name!r}]: {len(per_seed)} training seeds, others {num_seeds}; a "
                "source has one (used for every seed) or as many as the others."
            )
        for s, tables in enumerate(per_seed):
            if len(tables) != len(folds):
                raise ValueError(
                    f"sources[{name!r}][{s}]: {len(tables)} folds of findings for "
                    f"{len(folds)} folds of patient ids."
                )
            for f, t in enumerate(tables):
                where = f"sources[{name!r}], seed {s}, fold {f}"
                if tuple(t.class_names) != tuple(class_names):
                    raise ValueError(f"{where}: classes {t.class_names}, not {class_names}.")
                inside = t.example_index.size == 0 or t.example_index.max() < len(folds[f])
                if not inside or not np.array_equal(
                    folds[f][t.example_index], np.asarray(t.patient_ids, str)
                ):
                    raise ValueError(
                        f"{where}: its findings' patient ids are not those of the fold's "
                        "examples (findings of another test split?)."
                    )
    return num_seeds


def _check_paired(sources: dict, a: str, b: str, num_seeds: int) -> None:
    """A ``ValueError`` unless ``a`` and ``b`` hold the same findings, seed by seed and
    fold by fold (a single-seed source against every seed of the other)."""
    for name in (a, b):
        if name not in sources:
            raise ValueError(f"pairs: no source {name!r}; sources are {', '.join(sources)}.")
    for s in range(num_seeds):
        ta, tb = (sources[n][s if len(sources[n]) > 1 else 0] for n in (a, b))
        for f, (x, y) in enumerate(zip(ta, tb, strict=True)):
            if not np.array_equal(x.keys(), y.keys()):
                raise ValueError(
                    f"pairs ({a!r}, {b!r}): seed {s}, fold {f} hold other findings "
                    f"({len(x)} against {len(y)}, or other examples or classes); a paired "
                    "difference needs the same findings: the same test split, truth and classes."
                )


def _counts(tables, k: int) -> np.ndarray:
    """``(k,)`` findings per class, pooled over one seed's folds."""
    return sum(np.bincount(t.class_index, minlength=k) for t in tables)


def _seed_rates(tables, draws, columns, k: int):
    """One seed's ``(C, k)`` rates on the findings as given and ``(D, C, k)`` per draw."""
    num_draws = draws[0].shape[0]
    num, den = np.zeros((num_draws, len(columns), k)), np.zeros((num_draws, 1, k))
    num_point, den_point = np.zeros((len(columns), k)), np.zeros((1, k))
    for t, weights in zip(tables, draws, strict=True):
        onehot = np.eye(k)[t.class_index]  # (F, k)
        values = np.stack([t.column(c) for c in columns], axis=1)  # (F, C)
        per_class = values[:, :, None] * onehot[:, None, :]  # (F, C, k)
        w = weights[:, t.example_index].astype(np.float64)  # (D, F)
        num += (w @ per_class.reshape(len(t), -1)).reshape(num.shape)
        den += (w @ onehot)[:, None, :]
        num_point += per_class.sum(0)
        den_point += onehot.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num_point / den_point, num / den


def finding_rates(per_seed, draws, picks, columns, k: int) -> dict:
    """One source's per-class rates, as :func:`bootstrap_findings` resamples them.

    Args:
      per_seed: per training seed, per fold, a :class:`FindingTable`.
      draws: per fold, ``(D, N_f)`` multiplicities of its examples
        (:func:`chestattn_jax.metrics.fold_draw_weights`).
      picks: ``(D, S)`` seeds of each draw (:func:`chestattn_jax.metrics.seed_draws`);
        unused with one seed.
      columns: the per-finding values (:meth:`FindingTable.column`).
      k: the number of classes.

    Returns ``{column: (point (k,), per_draw (D, k))}``: the rate on the findings as given
    (mean over seeds) and in each draw (mean over the draw's picked seeds); NaN where a
    class has no finding (no drawn one).
    """
    scored = [_seed_rates(tables, draws, columns, k) for tables in per_seed]
    point = np.mean([p for p, _ in scored], axis=0)  # (C, k)
    per_draw = np.stack([d for _, d in scored])  # (S, D, C, k)
    if len(scored) > 1:
        per_draw = per_draw[picks.T, np.arange(picks.shape[0])[None, :]].mean(0)
    else:
        per_draw = per_draw[0]
    return {c: (point[i], per_draw[:, i]) for i, c in enumerate(columns)}


def _rate_summary(scored, counts, class_names, num_draws: int, level: float) -> dict:
    """:func:`bootstrap_findings`' per-column summary from ``(point, per_draw)``."""
    point, per_draw = scored
    alpha = (1.0 - level) / 2.0
    per_class = {
        name: {
            "rate": None if np.isnan(point[j]) else float(point[j]),
            "ci": _interval(per_draw[:, j], alpha),
            "count": int(counts[j]),
            "undefined_draws": int(np.isnan(per_draw[:, j]).sum()) if counts[j] else 0,
        }
        for j, name in enumerate(class_names)
    }
    mean = _class_mean(point)[()]
    return {
        "classes": per_class,
        "mean_rate": None if np.isnan(mean) else float(mean),
        "mean_ci": _interval(_class_mean(per_draw), alpha),
        "count": int(np.sum(counts)),
        "num_draws": num_draws,
        "level": level,
    }
