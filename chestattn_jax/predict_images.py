"""``--mode=predict``: per-class probabilities and attention overlays for image files.

  python -m chestattn_jax.main --config=configs/nih.py --workdir=W \
      --mode=predict --images=a.png,b.jpg,c.dcm [--output_dir=OUT] [--thresholds=T]

Restores the checkpoint of ``config.eval.checkpoint`` (``best`` by default) of
``W``, reads every file as the prepare step does (PNG and JPEG of any bit depth
and mode, DICOM through pydicom; see ``chestattn_jax.data.images``), letterboxes
it to ``config.data.image_size`` and writes to ``OUT`` (``W/predict`` by default):

- ``predictions.json``: the checkpoint, the classes, and per image its
  probabilities, ``calls`` (``{class: true / false / null}``: probability >= the class's
  threshold; null where the class has none, and ``calls: null`` without thresholds),
  ``recalibrated_probabilities`` (null unless the thresholds file carries a
  recalibration), overlay file and ``warnings`` (a DICOM whose View Position is not
  frontal: the models are trained on frontal views); at the top, ``thresholds`` (their
  ``values``, ``rule``, ``reasons``, ``source``, ``chosen_on``, ``step``,
  ``recalibration``) or ``null`` and ``thresholds_why`` saying why there are none
  (:func:`chestattn_jax.trained_model.model_thresholds`: ``T``, refused unless it fits
  the model's classes and checkpoint step, or ``W/eval/thresholds.json`` where it was
  written at the restored checkpoint's step); images that could not be read
  or letterboxed (a FIFO or device file is refused before it is opened) are listed
  under ``errors`` with the reason, and the others are still scored; a file given
  more than once (however spelled) is scored once and listed under ``repeated``;
- one overlay PNG per image: the letterboxed input and each class's gate-3 map
  (class-based), the shared map (image-based), or the probabilities (resnet),
  named after the input (``a.png`` for ``a.dcm``) and unique: ``a_2.png`` for a
  second ``a``, or where ``a.png`` is already in ``OUT`` (an input, or any file this
  command did not write). An input is never written over.

``OUT`` holds one run's results: what an earlier prediction wrote there (its
``predictions.json`` and the overlays it lists) is removed once this run's inputs
are known to be valid. A checkpoint trained with another variant, class list or
backbone than the config describes, or a config whose model-input settings
(``data.image_size``, ``data.mean``, ``data.std``) differ from training's, is
refused with a message naming the difference, before anything is written; so is a
thresholds file that is not valid (naming the field), or that does not fit the model.

The bundle's ``predict`` command scores files with :func:`score_files` too; this module
imports the model code (flax) only where :func:`predict` restores a workdir.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from etils import epath

from chestattn_jax import files, image_inputs
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data.images import letterbox
from chestattn_jax.reporting import plots

PREDICTIONS_FILE = "predictions.json"


def _overlay_names(paths, taken=()) -> list[str]:
    """One overlay file name per path, unique, and none of ``taken`` (the names already in
    the output folder: an input there, a file this command did not write), compared
    without case as a case-insensitive disk would: ``a.png``, ``b.dcm``, ``dir2/a.png``
    -> ``a.png``, ``b.png``, ``a_2.png``; with ``a.png`` taken, ``a_2.png`` first."""
    used = {n.lower() for n in taken}
    names = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p.rstrip("/")))[0] or "image"
        name, n = f"{stem}.png", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name.lower())
        names.append(name)
    return names


def _key(path: str) -> str:
    """One spelling per file: ``a.png``, ``./a.png`` and its absolute path are one."""
    p = os.fspath(path)
    return p if "://" in p else os.path.normpath(os.path.abspath(p))


def distinct_paths(paths) -> tuple[list[str], list[dict]]:
    """``paths`` with each file once (``a.png``, ``./a.png`` and its absolute path are one
    file), in order, as first spelled; and ``[{"path", "times"}]`` for the repeated ones."""
    kept, first, times = [], {}, {}
    for p in map(os.fspath, paths):
        key = _key(p)
        if key in first:
            times[first[key]] += 1
            continue
        first[key] = p
        times[p] = 1
        kept.append(p)
    repeated = [{"path": p, "times": n} for p, n in times.items() if n > 1]
    return kept, repeated


def load_images(paths, size: int):
    """Reads and letterboxes every path. Returns ``(images {path: (S, S) uint8}, errors,
    warnings {path: [str]})`` where ``errors`` lists ``{"path", "error"}`` for files that
    could not be read or letterboxed, whatever the reason (a FIFO or device is refused
    before it is opened): one bad file never keeps the others from scoring. ``warnings``
    holds what may make a scored image's probabilities unreliable (a lateral DICOM)."""
    images, errors, warnings = {}, [], {}
    for path in paths:
        try:
            images[path] = letterbox(image_inputs.as_gray_uint8(path), size)
        except Exception as e:  # any reader or resize failure of this one file
            logging.warning("Skipping %s: %s: %s", path, type(e).__name__, e)
            errors.append({"path": path, "error": f"{type(e).__name__}: {e}"})
            continue
        warnings[path] = image_inputs.view_warnings(path)
        for w in warnings[path]:
            logging.warning("%s", w)
    return images, errors, warnings


def _inputs_in(out_dir: str, paths) -> set[str]:
    """The names of the inputs among ``paths`` that lie in ``out_dir`` itself."""
    here = _key(out_dir)
    return {os.path.basename(_key(p)) for p in paths if os.path.dirname(_key(p)) == here}


def check_output_dir(out_dir: str, paths, given: str = "--images") -> None:
    """Refuses an output folder where the results file would replace an input (one of
    ``given``: how the command takes its images)."""
    if PREDICTIONS_FILE in _inputs_in(out_dir, paths):
        raise ValueError(
            f"{os.path.join(out_dir, PREDICTIONS_FILE)} is one of the {given}, and the results "
            "would be written over it: give another --output_dir."
        )


def _earlier_result(out_dir: str) -> str:
    """What a refused run says of the results of an earlier run in ``out_dir``."""
    path = epath.Path(out_dir) / PREDICTIONS_FILE
    try:
        if not path.exists():
            return ""
    except OSError:
        return ""
    return f" Nothing was written: {path} is an earlier run's result, left as it was."


def _with_message(e: BaseException, text: str) -> BaseException:
    """``e`` with ``text`` appended to what its message says."""
    if isinstance(e, OSError) and e.strerror:
        e.strerror += text
    elif e.args and isinstance(e.args[0], str):
        e.args = (e.args[0] + text, *e.args[1:])
    return e


def _clear_earlier_run(out: epath.Path, paths) -> None:
    """Removes what an earlier prediction into ``out`` wrote there (its results file and
    the overlays it lists), never one of ``paths``: an output folder holds one run's
    results, so that an overlay left from another run is never read as this one's."""
    try:
        earlier = workdir_lib.read_json(out / PREDICTIONS_FILE) or {}
    except ValueError:  # a damaged results file: replaced below all the same
        earlier = {}
    inputs = {_key(p) for p in paths}
    overlays = [p.get("overlay") for p in earlier.get("predictions", []) if isinstance(p, dict)]
    for overlay in overlays:
        if not isinstance(overlay, str) or _key(overlay) in inputs:
            continue
        if _key(os.path.dirname(overlay)) != _key(os.fspath(out)):
            continue  # written into another folder (the results file was moved)
        epath.Path(overlay).unlink(missing_ok=True)
    (out / PREDICTIONS_FILE).unlink(missing_ok=True)


def predict(
    config, workdir: str, paths, output_dir: str | None = None, thresholds: str | None = None
) -> dict:
    """Scores ``paths`` with the checkpoint of ``workdir``, and calls each class at the
    thresholds of the file ``thresholds`` (else the workdir's evaluation's, where they
    fit); returns what ``predictions.json`` holds (see the module docstring).

    Nothing is written until the checkpoint, the config, the thresholds and the output
    folder are known to fit; a refusal says whether the folder holds an earlier run's
    results (left as they were). An input is never written over: overlays take other
    names."""
    # Here, not at the top: the bundle's predict command shares this module without flax.
    from chestattn_jax import trained_model
    from chestattn_jax.checkpointing import CheckpointError

    if jax.process_count() > 1:
        raise RuntimeError("--mode=predict runs in one process; start it without a coordinator.")
    paths, repeated = distinct_paths(paths)
    for r in repeated:
        logging.warning("%s is given %d times; it is scored once.", r["path"], r["times"])
    out_dir = output_dir or os.path.join(workdir, workdir_lib.PREDICT_DIR)
    try:
        check_output_dir(out_dir, paths)
        model = trained_model.restore(config, workdir, config.eval.checkpoint, thresholds)
    except (ValueError, OSError, CheckpointError) as e:
        raise _with_message(e, _earlier_result(out_dir)) from None
    source = {"workdir": workdir if "://" in workdir else os.path.abspath(workdir)}
    result = score_files(model, paths, repeated, out_dir, source, "model")
    if model.thresholds is None:
        logging.warning("No calls, only probabilities: %s", model.thresholds_why)
    else:
        t = model.thresholds
        logging.info(
            "Calls at the %s thresholds of %s (chosen on the %s, step %s)",
            t["rule"],
            t["source"],
            t["chosen_on"],
            t["step"],
        )
    predictions = result["predictions"]
    warned = sum(bool(p["warnings"]) for p in predictions)
    logging.info(
        "Scored %d of %d images%s%s -> %s",
        len(predictions),
        len(paths),
        f" ({len(repeated)} given more than once, scored once)" if repeated else "",
        f" ({warned} with warnings, see predictions.json)" if warned else "",
        out_dir,
    )
    return result


def score_files(
    model, paths, repeated, out_dir: str | None, source: dict, kind: str, batch_size=None
) -> dict:
    """What ``predictions.json`` holds for the distinct files ``paths`` (``repeated`` as
    :func:`distinct_paths` gives it) scored by ``model`` (a
    :class:`~chestattn_jax.trained_model.Model` or a :class:`~chestattn_jax.bundle.Bundle`),
    ``source`` (``{"workdir": W}`` or ``{"bundle": FILE}``) first; the files that cannot be
    read are listed under ``errors``. With ``out_dir``, written there with one overlay per
    scored image (titled with ``kind``, ``model`` or ``bundle``), what an earlier run wrote
    there removed first, once the images are scored (a model that fails leaves the folder
    as it was, and creates none); without, nothing is written and each ``overlay`` is ``None``."""
    images, errors, warnings = load_images(paths, model.image_size)
    ok = list(images)
    classes, step = model.classes, int(model.step)
    predictions = {}
    if ok:  # scored before the output folder is touched: a failure leaves it as it was
        probs, maps = model.predict_letterboxed(np.stack([images[p] for p in ok]), batch_size)
        calls, recalibrated = model.calls(probs), model.recalibrated(probs)
    if out_dir is not None:
        out = epath.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _clear_earlier_run(out, paths)
        # (A bucket has no empty folders: a new output folder there does not exist yet.)
        taken = [PREDICTIONS_FILE, *(p.name for p in out.iterdir())] if out.exists() else []
        names = dict(zip(paths, _overlay_names(paths, taken), strict=True))
    if ok:
        for r, path in enumerate(ok):
            overlay = None
            if out_dir is not None:
                overlay = plots.image_overlays(
                    images[path],
                    None if maps is None else maps[r],
                    classes,
                    probs[r],
                    os.path.join(out_dir, names[path]),
                    title=f"{os.path.basename(path)} ({model.variant} {kind}, step {step})",
                )
            predictions[path] = {
                "path": path,
                "probabilities": dict(zip(classes, probs[r].tolist(), strict=True)),
                "calls": None if calls is None else calls[r],
                "recalibrated_probabilities": None
                if recalibrated is None
                else dict(zip(classes, recalibrated[r].tolist(), strict=True)),
                "overlay": overlay,
                "warnings": warnings[path],
            }
    result = {
        **source,
        "checkpoint_step": step,
        "variant": model.variant,
        "image_size": model.image_size,
        "classes": classes,
        "thresholds": model.thresholds,
        "thresholds_why": model.thresholds_why,
        "predictions": [predictions[p] for p in paths if p in predictions],
        "errors": errors,
        "repeated": repeated,
    }
    if out_dir is not None:
        files.write_text(out / PREDICTIONS_FILE, json.dumps(result, indent=2))
    return result
