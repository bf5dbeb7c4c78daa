"""``--mode=predict``: per-class probabilities and attention overlays for image files.

  python -m chestattn_jax.main --config=configs/nih.py --workdir=W \
      --mode=predict --images=a.png,b.jpg,c.dcm [--output_dir=OUT]

Restores the checkpoint of ``config.eval.checkpoint`` (``best`` by default) of
``W``, reads every file as the prepare step does (PNG and JPEG of any bit depth
and mode, DICOM through pydicom; see ``chestattn_jax.data.images``), letterboxes
it to ``config.data.image_size`` and writes to ``OUT`` (``W/predict`` by default):

- ``predictions.json``: the checkpoint, the classes, and per image its
  probabilities and overlay file; images that could not be read or letterboxed
  are listed under ``errors`` with the reason, and the others are still scored;
  a file given more than once (however spelled) is scored once and listed
  under ``repeated``;
- one overlay PNG per image: the letterboxed input and each class's gate-3 map
  (class-based), the shared map (image-based), or the probabilities (resnet).

A checkpoint trained with another variant, class list or backbone than the
config describes is refused with a message naming the difference.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from etils import epath

from chestattn_jax import figures, files, inference
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data.images import letterbox, load_grayscale


def _overlay_names(paths) -> list[str]:
    """``a.png``, ``b.dcm``, ``dir2/a.png`` -> ``a.png``, ``b.png``, ``a_2.png`` (unique)."""
    names, seen = [], {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}.png")
    return names


def distinct_paths(paths) -> tuple[list[str], list[dict]]:
    """``paths`` with each file once (``a.png``, ``./a.png`` and its absolute path are one
    file), in order, as first spelled; and ``[{"path", "times"}]`` for the repeated ones."""
    kept, first, times = [], {}, {}
    for p in map(os.fspath, paths):
        key = p if "://" in p else os.path.normpath(os.path.abspath(p))
        if key in first:
            times[first[key]] += 1
            continue
        first[key] = p
        times[p] = 1
        kept.append(p)
    repeated = [{"path": p, "times": n} for p, n in times.items() if n > 1]
    return kept, repeated


def load_images(paths, size: int):
    """Reads and letterboxes every path. Returns ``(images {path: (S, S) uint8}, errors)``
    where ``errors`` lists ``{"path", "error"}`` for files that could not be read or
    letterboxed, whatever the reason: one bad file never keeps the others from scoring."""
    images, errors = {}, []
    for path in paths:
        try:
            images[path] = letterbox(load_grayscale(path), size)
        except Exception as e:  # any reader or resize failure of this one file
            logging.warning("Skipping %s: %s: %s", path, type(e).__name__, e)
            errors.append({"path": path, "error": f"{type(e).__name__}: {e}"})
    return images, errors


def predict(config, workdir: str, paths, output_dir: str | None = None) -> dict:
    """Scores ``paths`` with the checkpoint of ``workdir``; returns what
    ``predictions.json`` holds (see the module docstring)."""
    if jax.process_count() > 1:
        raise RuntimeError("--mode=predict runs in one process; start it without a coordinator.")
    paths, repeated = distinct_paths(paths)
    for r in repeated:
        logging.warning("%s is given %d times; it is scored once.", r["path"], r["times"])
    out_dir = output_dir or os.path.join(workdir, workdir_lib.PREDICT_DIR)
    model = inference.restore(config, workdir, config.eval.checkpoint)
    step, classes, size = model.step, model.classes, model.image_size
    images, errors = load_images(paths, size)
    ok = list(images)
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    names = dict(zip(paths, _overlay_names(paths), strict=True))
    predictions = {}
    if ok:
        probs, maps = model.predict_letterboxed(np.stack([images[p] for p in ok]))
        for r, path in enumerate(ok):
            overlay = os.path.join(out_dir, names[path])
            figures.image_overlays(
                images[path],
                None if maps is None else maps[r],
                classes,
                probs[r],
                overlay,
                title=f"{os.path.basename(path)} ({config.model.variant} model, step {step})",
            )
            predictions[path] = {
                "path": path,
                "probabilities": dict(zip(classes, probs[r].tolist(), strict=True)),
                "overlay": overlay,
            }
    result = {
        "workdir": workdir if "://" in workdir else os.path.abspath(workdir),
        "checkpoint_step": int(step),
        "variant": config.model.variant,
        "image_size": size,
        "classes": classes,
        "predictions": [predictions[p] for p in paths if p in predictions],
        "errors": errors,
        "repeated": repeated,
    }
    files.write_text(epath.Path(out_dir, "predictions.json"), json.dumps(result, indent=2))
    logging.info(
        "Scored %d of %d images%s -> %s",
        len(predictions),
        len(paths),
        f" ({len(repeated)} given more than once, scored once)" if repeated else "",
        out_dir,
    )
    return result
