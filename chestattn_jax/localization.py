"""Where do the attention maps look? The pointing game against truth masks.

For every test image and every class present in it, the pointing game asks
whether the maximum of that class's attention map falls on the finding. A map
of ``(h, w)`` cells covers an ``(S, S)`` image; the maximum cell counts as a hit
when any truth pixel lies inside it, so a coarse 14 x 14 map is not penalised
for its resolution. The class-based model has one map per class (gate 3); the
image-based model has one map for all classes, scored against each present class.
"""

from __future__ import annotations

import numpy as np


def argmax_cells(maps) -> np.ndarray:
    """``(..., h, w)`` maps -> ``(..., 2)`` (row, col) of each map's maximum."""
    maps = np.asarray(maps)
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w).argmax(-1)
    return np.stack([flat // w, flat % w], axis=-1)


def cell_hits(cell, map_shape, truth_mask) -> bool:
    """Whether any pixel of ``truth_mask`` ``(S, S)`` lies in map cell ``(row, col)``."""
    h, w = map_shape
    size_y, size_x = truth_mask.shape
    r, c = int(cell[0]), int(cell[1])
    y0, y1 = (r * size_y) // h, -(-((r + 1) * size_y) // h)
    x0, x1 = (c * size_x) // w, -(-((c + 1) * size_x) // w)
    return bool(truth_mask[y0:y1, x0:x1].any())


def pointing_game(maps, truth_masks, labels, class_names) -> dict:
    """Per-class pointing-game hit rate.

    Args:
      maps: ``(N, k, h, w)`` per-class maps, or ``(N, h, w)`` one map per image
        (then scored against every present class).
      truth_masks: ``(N, k, S, S)`` bool truth masks.
      labels: ``(N, k)`` in {0, 1}; only present classes with a non-empty mask count.
      class_names: ``k`` names.

    Returns:
      ``{"hit_rate": {class: rate or None}, "mean_hit_rate": float or None,
      "count": {class: number of scored findings}}``.
    """
    maps = np.asarray(maps)
    labels = np.asarray(labels)
    n, k = labels.shape
    if maps.ndim == 3:
        maps = np.broadcast_to(maps[:, None], (n, k, *maps.shape[1:]))
    cells = argmax_cells(maps)
    hits = np.zeros(k)
    counts = np.zeros(k, int)
    for t in range(n):
        for j in np.flatnonzero(labels[t]):
            if not truth_masks[t][j].any():
                continue
            counts[j] += 1
            hits[j] += cell_hits(cells[t, j], maps.shape[-2:], truth_masks[t][j])
    rates = {
        c: (float(hits[j] / counts[j]) if counts[j] else None) for j, c in enumerate(class_names)
    }
    defined = [v for v in rates.values() if v is not None]
    return {
        "hit_rate": rates,
        "mean_hit_rate": float(np.mean(defined)) if defined else None,
        "count": {c: int(counts[j]) for j, c in enumerate(class_names)},
    }


def attention_maps(state, source, batch_size: int, mesh, mean: float, std: float):
    """Gate-3 maps of every example of ``source``: ``(N, k, h, w)`` or ``(N, h, w)``."""
    import jax

    from chestattn_jax import sharding as shd
    from chestattn_jax.data.input_pipeline import eval_batches, normalize_images

    @jax.jit
    def maps_fn(state, images):
        _, aux = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats},
            normalize_images(images, mean, std),
            train=False,
        )
        return aux["attention"]["gate3"]

    out = []
    sharding = shd.batch_sharded(mesh)
    for batch in eval_batches(source, shd.local_batch_size(batch_size, "config.eval.batch_size")):
        maps = maps_fn(state, shd.to_global({"image": batch["image"]}, sharding)["image"])
        out.append(np.asarray(jax.device_get(maps))[batch["valid"]])
    return np.concatenate(out)


def localization_metrics(state, source, config, mesh) -> dict:
    """The pointing game of the gate-3 maps on a source with truth masks (the phantoms)."""
    maps = attention_maps(
        state, source, config.eval.batch_size, mesh, config.data.mean, config.data.std
    )
    truths = [source.truth(i) for i in range(len(source))]
    masks = np.stack([t["masks"] for t in truths])
    labels = np.stack([t["labels"] for t in truths])
    return pointing_game(maps, masks, labels, list(config.data.classes))
