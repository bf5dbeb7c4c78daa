"""Where do the attention maps look? The pointing game and IoU / IoBB against truth.

Truth is a mask per class and image: the phantoms' finding masks, or NIH's boxes
filled in. The class-based model has one map per class (gate 3); the image-based
model has one map for all classes, scored against each present class.

- Pointing game: does the maximum of the class's map fall on the finding? A map
  of ``(h, w)`` cells covers an ``(S, S)`` image; the maximum cell counts as a hit
  when any truth pixel lies inside it, so a coarse 14 x 14 map is not penalised
  for its resolution.
- Overlap: the map is resized bilinearly to ``(S, S)``, divided by its maximum,
  and thresholded at ``map_threshold`` (0.5 by default) into a predicted region R.
  With truth T, IoU = |R ∩ T| / |R ∪ T| and IoBB = |R ∩ T| / |R| (ChestX-ray8's
  "intersection over the detected B-box", here over the detected region). As in
  ChestX-ray8's Table 3, a finding counts as localised at threshold t when its
  IoU (or IoBB) is at least t; we report that accuracy at t = 0.1, 0.25, 0.5 and
  the mean IoU and IoBB.

Two baselines are scored the same way beside every model
(``evaluation/evaluators/localization.py``): a *class prior*, each class's average
truth mask over the training split as a fixed map (:class:`ClassPrior`), and a
*uniform* map (:meth:`LocalizationScores.add_uniform`).
A model's map earns credit only where it beats knowing where a class usually lies.
"""

from __future__ import annotations

import numpy as np

OVERLAP_THRESHOLDS = (0.1, 0.25, 0.5)


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


class LocalizationScores:
    """Accumulates, per class, the pointing-game hit and the IoU / IoBB of each finding.

    Fed one image at a time (:meth:`add`), so truth masks never pile up in memory.
    """

    def __init__(self, class_names, map_threshold: float = 0.5):
        self.class_names = list(class_names)
        self.map_threshold = map_threshold
        self._scores = [[] for _ in self.class_names]  # (hit, iou, iobb) per finding

    def add(self, maps, truth_masks, labels) -> None:
        """One image: ``maps`` ``(k, h, w)`` per class or ``(h, w)`` shared, ``truth_masks``
        ``(k, S, S)``, ``labels`` ``(k,)``. Present classes with a non-empty mask count."""
        maps = np.asarray(maps)
        for j in np.flatnonzero(np.asarray(labels)):
            truth = np.asarray(truth_masks[j], bool)
            if not truth.any():
                continue
            m = maps if maps.ndim == 2 else maps[j]
            hit = cell_hits(argmax_cells(m), m.shape, truth)
            region = upsample_map(m, truth.shape[0]) >= self.map_threshold
            self._scores[j].append((hit, *region_overlap(region, truth)))

    def add_uniform(self, map_shape, truth_masks, labels) -> None:
        """The same scores for a uniform map of ``map_shape``, which favours no cell.

        Its maximum is every cell, so its pointing-game hit is the expected hit of a
        cell drawn at random: the fraction of cells holding a truth pixel. Its region
        is the whole image: IoU = IoBB = the truth's share of the image.
        """
        for j in np.flatnonzero(np.asarray(labels)):
            truth = np.asarray(truth_masks[j], bool)
            if not truth.any():
                continue
            share = float(truth.mean())
            self._scores[j].append((float(cells_hit(truth, map_shape).mean()), share, share))

    def _per_class(self, column: int, threshold: float | None = None) -> dict:
        out = {}
        for name, scores in zip(self.class_names, self._scores, strict=True):
            values = [s[column] for s in scores]
            if threshold is not None:
                values = [v >= threshold for v in values]
            out[name] = float(np.mean(values)) if values else None
        return out

    @staticmethod
    def _mean(per_class: dict):
        defined = [v for v in per_class.values() if v is not None]
        return float(np.mean(defined)) if defined else None

    def counts(self) -> dict:
        return {c: len(s) for c, s in zip(self.class_names, self._scores, strict=True)}

    def pointing_game(self) -> dict:
        """``{"hit_rate": {class: rate or None}, "mean_hit_rate", "count"}``."""
        rates = self._per_class(0)
        return {"hit_rate": rates, "mean_hit_rate": self._mean(rates), "count": self.counts()}

    def overlap(self, thresholds=OVERLAP_THRESHOLDS) -> dict:
        """``{"iou": {class: mean}, "mean_iou", "iou_accuracy": {t: {class: fraction with
        IoU >= t}}, "mean_iou_accuracy": {t: mean over classes}}``, the same for ``iobb``,
        plus ``count`` and ``map_threshold``. A class with no finding has ``None``."""
        out = {"map_threshold": self.map_threshold, "count": self.counts()}
        for column, name in ((1, "iou"), (2, "iobb")):
            out[name] = self._per_class(column)
            out[f"mean_{name}"] = self._mean(out[name])
            acc = {str(t): self._per_class(column, t) for t in thresholds}
            out[f"{name}_accuracy"] = acc
            out[f"mean_{name}_accuracy"] = {t: self._mean(a) for t, a in acc.items()}
        return out


class ClassPrior:
    """Each class's average truth mask: a fixed map per class that knows where a finding
    usually lies and nothing about the image. Scored like a model's maps, it is the
    baseline a model's localisation must beat.

    :meth:`add` the truth of the images it is built from (the training split); then
    :meth:`maps` gives the ``(k, h, w)`` maps at a model's map resolution. When it is
    built from the evaluated split itself (no truth in the training split, as with
    NIH's boxes), ``leave_out`` removes the scored image's own masks first.
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


def pointing_game(maps, truth_masks, labels, class_names) -> dict:
    """Per-class pointing-game hit rate; arguments as :func:`score_maps`."""
    return score_maps(maps, truth_masks, labels, class_names).pointing_game()


def overlap_scores(
    maps, truth_masks, labels, class_names, map_threshold=0.5, thresholds=OVERLAP_THRESHOLDS
) -> dict:
    """Per-class IoU / IoBB of thresholded maps; arguments as :func:`score_maps`."""
    return score_maps(maps, truth_masks, labels, class_names, map_threshold).overlap(thresholds)
