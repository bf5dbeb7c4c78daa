"""Restoring a trained model and running it: what ``--mode=evaluate``, ``--mode=predict``
and a notebook share, and the library's public Python API.

  import chestattn_jax
  model = chestattn_jax.load("workdirs/nih_class")          # the best checkpoint
  out = model.predict(["a.png", "b.dcm"])                     # or uint8 / float arrays
  out["probabilities"]   # (N, k), in model.classes order
  out["maps"]            # (N, k, h, w) class-based, (N, h, w) image-based, None for resnet
  out["images"]          # (N, S, S) uint8: what the model saw, letterboxed as in training
  out["calls"]           # [{class: True / False / None}, ...] or None: see below
  model.embed(["a.png"])  # the pooled features the heads read: g and each gate's ĝ

Files are read as the prepare step reads them (PNG and JPEG of any bit depth and mode,
DICOM through pydicom) and every image is letterboxed to the training image size and
normalised as in training, so ``predict`` gives what ``--mode=predict`` writes.

Calls. Per class, an image is called positive when its (raw) probability is at least the
class's threshold, chosen on the validation split by ``--mode=evaluate`` (the
``operating_points`` evaluator writes ``WORKDIR/eval/thresholds.json``). That file is used
only where it was written at the restored checkpoint's step for the model's classes;
otherwise there are no calls, and ``thresholds_why`` says why. A thresholds file may also
be given (``load(w, thresholds=PATH)``, ``--thresholds=PATH``): it must fit the model's
classes and checkpoint step, or it is refused. A class without a threshold (with the
reason the file gives) is called ``None``: nothing falls back to 0.5.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from chestattn_jax import config_fields as fields
from chestattn_jax import files, image_inputs
from chestattn_jax import sharding as shd
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.calibration import METHODS as RECALIBRATION_METHODS
from chestattn_jax.calibration import apply_recalibration
from chestattn_jax.checkpointing import Checkpointer, CheckpointError, CheckpointMismatch, describe
from chestattn_jax.config import get_base_config
from chestattn_jax.data.input_pipeline import normalize_images
from chestattn_jax.models import create_model
from chestattn_jax.train_state import abstract_train_state, create_optimizer, create_train_state


def abstract_state(config, mesh):
    """The train state of ``config`` as shapes, dtypes and (replicated) shardings."""
    init = functools.partial(
        create_train_state,
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )
    return abstract_train_state(init, shd.replicated(mesh))


def restore_for_inference(config, workdir: str, which: str = "best"):
    """The train state of checkpoint ``which`` (``best`` or ``latest``) of ``workdir``,
    checked against ``config``'s model. Returns ``(state, step, mesh)``.

    An unreadable checkpoint is passed over, with a warning, for the next in order
    (the rule training resumes by; :meth:`Checkpointer.restore_preferred`).
    """
    problem = not_a_run(workdir, "--workdir={run}")
    if problem:
        raise FileNotFoundError(problem)
    check_model_fields(workdir, config)  # the model fields, named, before any read
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        mesh = shd.make_mesh()
        step, state, _ = checkpointer.restore_preferred(abstract_state(config, mesh), which)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(
            f"{e} Evaluate with the config the workdir was trained with "
            f"(variant {config.model.variant!r}, {len(config.data.classes)} classes now)."
        ) from None
    finally:
        checkpointer.close()
    return state, step, mesh


def restore_checkpoint_step(config, workdir: str, step: int, what: str):
    """The train state of checkpoint ``step`` of ``workdir`` under ``config``; a missing
    step is a ``FileNotFoundError`` that names ``what`` asked for it (the flag or config
    field) and lists the steps there; a step that cannot be read is a
    :class:`~chestattn_jax.checkpointing.CheckpointError` naming the step, the workdir
    and the cause in one line."""
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        steps = checkpointer.all_steps()
        if step not in steps:
            raise FileNotFoundError(
                f"{what}: {workdir} has no checkpoint of step {step}; it has steps "
                f"{', '.join(map(str, steps)) or 'none'}."
            )
        abstract = abstract_state(config, shd.make_mesh())
        try:
            state, _ = checkpointer.restore(step, abstract)
        except Exception as e:  # Orbax and TensorStore raise many kinds for a damaged step
            raise CheckpointError(
                f"{what}: checkpoint step {step} of {workdir} cannot be read "
                f"({describe(e)}); give another step (it has "
                f"{', '.join(map(str, steps))})."
            ) from None
    finally:
        checkpointer.close()
    return state


def inference_fn(config, mesh, features: bool = False):
    """``jit``: ``(state, uint8 images) -> (logits (B, k) float32, gate-3 maps or None)``,
    outputs replicated. Gate-3 maps are ``(B, k, h, w)`` (class) or ``(B, h, w)`` (image).

    With ``features``, a third output: the embeddings ``{"global": g (B, C4) or None
    where stage 4 is skipped, "pooled": {"gate1": (B, C1), ...}}`` (the model's
    ``aux["global"]`` and ``aux["pooled"]``, see :mod:`chestattn_jax.models.nets`),
    computed in the same pass."""
    mean, std = config.data.mean, config.data.std

    def fn(state, images):
        logits, aux = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats},
            normalize_images(images, mean, std),
            train=False,
        )
        out = (logits.astype(np.float32), aux["attention"].get("gate3"))
        if features:
            out += ({"global": aux.get("global"), "pooled": aux["pooled"]},)
        return out

    return jax.jit(
        fn,
        in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)),
        out_shardings=shd.replicated(mesh),
        compiler_options=image_inputs.cpu_inference_options(),
    )


def check_model_fields(
    workdir: str,
    config,
    advice: str = "Evaluate with the config the workdir was trained with.",
    saved: dict | None = None,
) -> None:
    """Raises a ``ValueError`` naming each ``MODEL_FIELDS`` value of ``config`` that
    differs from the config ``workdir`` was trained with (``saved``, its ``config.json``,
    read here unless given): its checkpoints cannot be restored so. Nothing to compare
    (no ``config.json``) is no error."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE
    if saved is None:
        saved = workdir_lib.read_json(path)
    if saved is None:
        return
    model = fields.differences(saved, config, fields.MODEL_FIELDS, source=path)
    if model:
        raise ValueError(
            f"The checkpoints of {workdir} do not fit config.model / config.data "
            f"(variant {config.model.variant!r}, {len(config.data.classes)} classes): "
            + fields.describe_changes(model, "the checkpoint was trained with")
            + f". {advice}"
        )


def runs_under(folder) -> list[str]:
    """The names of the subfolders of ``folder`` that hold a training run (a
    ``config.json`` or ``checkpoints/``): an experiment's cells, or the variants of
    ``launch/run_variants.sh``; sorted."""
    root = workdir_lib.workdir_path(folder)
    try:
        children = [c for c in root.iterdir() if c.is_dir()]
    except OSError:  # no such folder, or not readable: nothing to list
        return []
    return sorted(
        c.name
        for c in children
        if (c / workdir_lib.CONFIG_FILE).exists() or (c / workdir_lib.CHECKPOINT_DIR).is_dir()
    )


def not_a_run(workdir: str, how: str) -> str | None:
    """Why ``workdir`` cannot be read as one training run, if it cannot: it does not exist,
    or it holds runs in its subfolders (an experiment's root) and none itself. ``how``
    says how to name a run, with ``{run}`` for its folder. ``None`` when it may be one."""
    root = workdir_lib.workdir_path(workdir)
    if not root.exists():
        return f"{workdir} does not exist: give the folder of a training run (its --workdir)."
    if (root / workdir_lib.CONFIG_FILE).exists() or (root / workdir_lib.CHECKPOINT_DIR).exists():
        return None
    runs = runs_under(root)
    if not runs:
        return None
    shown = ", ".join(runs[:6]) + (f" and {len(runs) - 6} more" if len(runs) > 6 else "")
    return (
        f"{workdir} holds no training run itself but {len(runs)} in its subfolders (an "
        f"experiment's root, whose cells are runs: python -m chestattn_jax.experiment --list "
        f"names them): {shown}. Give one of them: "
        + how.format(run=os.path.join(os.fspath(workdir), runs[0]))
        + "."
    )


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config ``workdir`` was trained with (``WORKDIR/config.json``)."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE
    saved = workdir_lib.read_json(path)
    if saved is None:
        raise FileNotFoundError(
            f"{path} does not exist: {workdir} holds no finished training run's config. "
            "Pass the config it was trained with (load(workdir, config=...))."
        )
    missing = fields.missing_fields(saved, get_base_config())
    if missing:
        raise ValueError(fields.not_this_version(path, missing))
    return ml_collections.ConfigDict(fields.from_json(saved))


class Model:
    """A restored model: ``predict`` on files or arrays, and ``embed`` (the features its
    classifiers read, for linear probes); ``classes``, ``variant``,
    ``image_size``, ``step`` (of the checkpoint) and ``config`` describe it.
    ``thresholds`` are those its calls are made at (:func:`read_thresholds`'s record), or
    ``None``, and then ``thresholds_why`` says why there are none."""

    def __init__(
        self, config, state, step: int, mesh, thresholds=None, thresholds_why: str | None = None
    ):
        self.config, self.state, self.step, self.mesh = config, state, int(step), mesh
        self.classes = list(config.data.classes)
        self.variant = config.model.variant
        self.image_size = int(config.data.image_size)
        self.thresholds, self.thresholds_why = thresholds, thresholds_why
        # One compiled function for predict and embed: logits, maps and embeddings.
        self._fn = inference_fn(config, mesh, features=True)

    def calls(self, probs) -> list[dict] | None:
        """Per row of ``(N, k)`` probabilities, :func:`~chestattn_jax.image_inputs.calls` at
        ``self.thresholds``;
        ``None`` without thresholds."""
        if self.thresholds is None:
            return None
        return image_inputs.calls(probs, self.classes, self.thresholds["values"])

    def recalibrated(self, probs) -> np.ndarray | None:
        """``(N, k)`` probabilities through the recalibration that came with
        ``self.thresholds`` (fitted on the same validation split); ``None`` without one."""
        params = (self.thresholds or {}).get("recalibration")
        return None if params is None else apply_recalibration(probs, params)

    def predict(self, images, batch_size: int | None = None) -> dict:
        """Probabilities and gate-3 maps of ``images``, each letterboxed to ``image_size``
        as in training. What ``images`` may be, and what each shape means:

        - a file path (PNG, JPEG or DICOM, read as the prepare step reads it);
        - a list (or tuple) of paths and arrays, each one image: ``(H, W)`` grayscale,
          ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (converted to grayscale
          as RGB and RGBA files are: alpha dropped, then luminance);
        - one array: ``(H, W)`` or ``(H, W, 1)`` is one image, ``(N, H, W)`` a stack of
          grayscale images, ``(N, H, W, C)`` with C = 1, 3 or 4 a stack. A 3-D array whose
          last axis is 3 or 4 is refused as ambiguous (one RGB image, or a stack of images
          3 or 4 pixels wide?): put one colour image in a list, ``[image]``.

        Pixels are uint8, or float in [0, 1] (scaled to 0-255 and rounded, as 8-bit files
        are stored).

        Returns ``{"probabilities": (N, k) float64, "maps": (N, k, h, w) | (N, h, w) |
        None, "images": (N, S, S) uint8, "classes": [...], "warnings": [[str], ...],
        "calls": [{class: bool | None}, ...] | None, "recalibrated_probabilities": (N, k)
        float64 | None, "thresholds": dict | None, "thresholds_why": str | None}``:
        ``warnings[i]`` says what may make image i's scores unreliable (a DICOM's lateral
        view: the models are trained on frontal views). ``calls[i][c]`` is whether
        ``probabilities[i, c] >= `` the class's threshold, ``None`` where the class has
        none; ``calls`` is ``None`` without thresholds (``thresholds_why`` says why).
        ``thresholds`` is :attr:`thresholds` (values, rule, source, where chosen);
        ``recalibrated_probabilities`` the probabilities through the recalibration fitted
        with them, where the thresholds file has one (the calls are made on the raw
        ``probabilities``). A file that cannot be read raises
        :class:`~chestattn_jax.data.raw.DataFormatError` (or ``OSError``) naming it.
        """
        image_inputs.check_batch_size(batch_size)
        boxed, warnings = image_inputs.letterboxed(images, self.image_size, "predict")
        return image_inputs.predictions(self, boxed, warnings, batch_size)

    def embed(self, images, batch_size: int | None = None) -> dict:
        """The features the model's classifiers read, for ``images`` as :meth:`predict`
        takes them (letterboxed and normalised the same way), from the same compiled pass.

        Returns ``{"global": (N, C4) | None, "gate1": (N, C1) | None, "gate2": (N, C2) |
        None, "gate3": (N, C3) | (N, k, C3) | None, "classes": [...], "warnings": [[str],
        ...]}``, float32: ``global`` is g, stage 4 average-pooled (``None`` where the model
        skips stage 4: ``image`` and ``class`` under pc + softmax with
        ``config.model.skip_unused_stage4``); ``gateS`` is gate S's attended feature ĝS
        (``None`` for ``resnet``, which has no gates); for ``class``, ``gate3[:, j]`` is
        class j's own ĝ3. Class j's logit is its classifier applied to ``global``
        (``resnet``), to ``concat(gate1, gate2, gate3)`` (``image``) or to ``concat(gate1,
        gate2, gate3[:, j])`` (``class``). ``warnings`` as :meth:`predict`'s."""
        image_inputs.check_batch_size(batch_size)
        boxed, warnings = image_inputs.letterboxed(images, self.image_size, "embed")
        parts = {"global": [], "gate1": [], "gate2": [], "gate3": []}
        for n, _, _, features in self._batches(boxed, batch_size):
            pooled = features["pooled"]
            for name in parts:
                value = features["global"] if name == "global" else pooled.get(name)
                if value is not None:
                    parts[name].append(np.asarray(jax.device_get(value), np.float32)[:n])
        out = {name: np.concatenate(v) if v else None for name, v in parts.items()}
        return {**out, "classes": self.classes, "warnings": warnings}

    def _batches(self, images, batch_size: int | None = None):
        """Runs the model on ``(N, S, S)`` uint8 letterboxed ``images`` in batches of
        ``batch_size`` (default ``config.eval.batch_size``) padded to a multiple of the
        device count; yields ``(rows, logits, gate3, features)`` per batch, the outputs
        on the device with ``rows`` real rows first."""
        image_inputs.check_batch_size(batch_size)
        images = np.asarray(images, np.uint8)
        n, size = len(images), self.image_size
        if images.ndim != 3 or images.shape[1:] != (size, size):
            raise ValueError(f"expected (N, {size}, {size}) images, got {images.shape}.")
        devices = self.mesh.devices.size
        batch_size = min(batch_size or self.config.eval.batch_size, max(n, 1))
        batch_size = -(-batch_size // devices) * devices  # one compiled shape per call
        sharding = shd.batch_sharded(self.mesh)
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            batch = np.zeros((batch_size, size, size, 1), np.uint8)
            batch[: len(chunk), ..., 0] = chunk
            out = self._fn(self.state, shd.to_global({"image": batch}, sharding)["image"])
            yield (len(chunk), *out)

    def predict_letterboxed(self, images, batch_size: int | None = None):
        """``(N, S, S)`` uint8 images already letterboxed to ``image_size`` ->
        ``(probabilities (N, k) float64, maps or None)``, in batches of ``batch_size``
        (default ``config.eval.batch_size``) padded to a multiple of the device count."""
        probs, maps = [], []
        for n, logits, gate3, _ in self._batches(images, batch_size):
            logits = np.asarray(jax.device_get(logits), np.float64)[:n]
            probs.append(1.0 / (1.0 + np.exp(-logits)))
            if gate3 is not None:
                maps.append(np.asarray(jax.device_get(gate3), np.float32)[:n])
        return np.concatenate(probs), (np.concatenate(maps) if maps else None)


def restore(config, workdir: str, which: str = "best", thresholds=None) -> Model:
    """The :class:`Model` of checkpoint ``which`` (``best`` or ``latest``) of ``workdir``
    under ``config``, whose model-input settings (``MODEL_INPUT_FIELDS``) must be
    training's unless ``config.allow_setting_changes``; with the thresholds of
    :func:`model_thresholds` (of the file ``thresholds``, or the workdir's evaluation),
    whose file is read and checked before the checkpoint is."""
    check_input_fields(workdir, config)
    found = _thresholds_file(workdir, list(config.data.classes), thresholds)
    state, step, mesh = restore_for_inference(config, workdir, which)
    chosen, why = _at_step(*found, int(step), which)
    return Model(config, state, step, mesh, chosen, why)


def check_input_fields(workdir: str, config, what: str = "Predicting") -> None:
    """Refuses a ``config`` whose ``MODEL_INPUT_FIELDS`` differ from the config
    ``workdir`` was trained with, naming each, unless ``config.allow_setting_changes``
    (then a warning names them): another image size or normalisation changes every
    probability, and nothing else would say so."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE
    saved = workdir_lib.read_json(path)
    changes = (
        {}
        if saved is None
        else fields.differences(saved, config, fields.MODEL_INPUT_FIELDS, source=path)
    )
    if not changes:
        return
    text = fields.describe_changes(changes, "the workdir was trained with")
    if not config.allow_setting_changes:
        raise ValueError(
            f"{what} under other model-input settings than training used: {text}. The model "
            "would see inputs it never saw, and every probability would change. Use the "
            "training settings, or pass --config.allow_setting_changes=true if this is what "
            "you want."
        )
    logging.warning("%s under other model-input settings than training (allowed): %s", what, text)


def load(workdir: str, config=None, checkpoint: str = "best", thresholds=None) -> Model:
    """The trained model of ``workdir``: its ``best`` (lowest validation loss) or
    ``latest`` checkpoint, with the config it was trained with unless ``config`` is
    given. A folder that does not exist, or an experiment's root (whose cells are the
    runs), raises ``FileNotFoundError`` saying so.

    Its calls are made at the thresholds of the file ``thresholds`` (a path; refused with
    a ``ValueError`` naming the field unless it fits the model's classes and checkpoint
    step), or else of ``WORKDIR/eval/thresholds.json`` where that was written at this
    checkpoint (see :func:`model_thresholds`)."""
    problem = not_a_run(workdir, "load({run!r})")
    if problem:
        raise FileNotFoundError(problem)
    config = config if config is not None else workdir_config(workdir)
    return restore(config, workdir, checkpoint, thresholds)


# ------------------------------------------------------------------ thresholds and calls

# What the operating_points evaluator writes into an evaluation folder (WORKDIR/eval for
# the test split at the best checkpoint): per class the threshold chosen on the validation
# split, and the recalibration fitted there.
THRESHOLDS_FILE = workdir_lib.THRESHOLDS_FILE
_REQUIRED = ("rule", "classes", "thresholds", "chosen_on", "step")


def workdir_thresholds(workdir) -> str:
    """The path of the thresholds file of ``workdir``'s evaluation (``WORKDIR/eval``)."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.EVAL_DIR / THRESHOLDS_FILE
    return os.fspath(path)


def read_thresholds(path) -> dict:
    """The thresholds file at ``path`` (what ``--mode=evaluate`` writes, or a file in its
    format), checked field by field. Returns ``{"source": path, "rule", "classes",
    "values": {class: float | None}, "reasons": {class: str}, "chosen_on", "step": int |
    None, "recalibration": dict | None}`` (``values`` is the file's ``thresholds``;
    ``reasons`` and ``recalibration`` may be absent from the file). A missing file raises
    ``FileNotFoundError``; one that is not JSON, lacks a field or holds a wrong value, a
    ``ValueError`` naming the file and the field."""
    path = os.fspath(path)
    path = path if "://" in path else os.path.abspath(path)
    try:
        saved = files.read_json(path)
    except ValueError as e:  # read_json's own message advises moving the file away
        raise ValueError(f"thresholds file {path} is not valid JSON ({e.__cause__}).") from None
    if saved is None:
        raise FileNotFoundError(f"thresholds file {path} does not exist.")
    if not isinstance(saved, dict):
        raise ValueError(f"thresholds file {path} holds a {type(saved).__name__}, not an object.")

    def bad(field: str, text: str) -> ValueError:
        return ValueError(f"thresholds file {path}: field {field!r} {text}")

    missing = [f for f in _REQUIRED if f not in saved]
    if missing:
        raise bad(
            missing[0],
            "is missing. A thresholds file holds " + ", ".join(_REQUIRED) + " (step: the "
            "checkpoint they were chosen at, or null), as --mode=evaluate writes it.",
        )
    classes = saved["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) for c in classes)
        or len(set(classes)) < len(classes)
    ):
        raise bad("classes", f"must be a non-empty list of distinct class names; got {classes!r}.")
    values = saved["thresholds"]
    if not isinstance(values, dict):
        raise bad("thresholds", f"must map each class to its threshold or null; got {values!r}.")
    for c in classes:
        if c not in values:
            raise bad(f"thresholds.{c}", "is missing (null for a class without a threshold).")
        if values[c] is not None and not (_number(values[c]) and 0.0 <= values[c] <= 1.0):
            raise bad(
                f"thresholds.{c}", f"must be a probability in [0, 1] or null; got {values[c]!r}."
            )
    for c in values:
        if c not in classes:
            raise bad(f"thresholds.{c}", f"names a class that is not in 'classes' ({classes}).")
    for field in ("rule", "chosen_on"):
        if not isinstance(saved[field], str) or not saved[field]:
            raise bad(field, f"must be a non-empty string; got {saved[field]!r}.")
    step = saved["step"]
    if step is not None and not (
        isinstance(step, int) and not isinstance(step, bool) and step >= 0
    ):
        raise bad("step", f"must be a checkpoint step (an integer >= 0) or null; got {step!r}.")
    reasons = saved.get("reasons", {})
    if not isinstance(reasons, dict):
        raise bad("reasons", f"must map classes to why they have no threshold; got {reasons!r}.")
    for c, why in reasons.items():
        if c not in classes or not isinstance(why, str):
            raise bad(f"reasons.{c}", f"must be a class of 'classes' with a text; got {why!r}.")
    recalibration = saved.get("recalibration")
    if recalibration is not None:
        _check_recalibration(recalibration, classes, bad)
    return {
        "source": path,
        "rule": saved["rule"],
        "classes": classes,
        "values": {c: None if values[c] is None else float(values[c]) for c in classes},
        "reasons": reasons,
        "chosen_on": saved["chosen_on"],
        "step": step,
        "recalibration": recalibration,
    }


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_recalibration(params, classes, bad) -> None:
    """Raises ``bad(field, text)`` unless ``params`` is what
    :func:`chestattn_jax.calibration.fit_recalibration` returns for ``classes``."""
    if not isinstance(params, dict):
        raise bad("recalibration", f"must be an object or null; got {params!r}.")
    method = params.get("method")
    if method not in RECALIBRATION_METHODS:
        raise bad(
            "recalibration.method", f"must be one of {RECALIBRATION_METHODS}; got {method!r}."
        )
    if params.get("class_names") != classes:
        raise bad("recalibration.class_names", f"must be the file's classes, {classes}.")
    per_class = params.get("classes")
    names = ("temperature",) if method == "temperature" else ("a", "b")
    for c in classes:
        one = per_class.get(c) if isinstance(per_class, dict) else None
        for name in names:
            value = one.get(name) if isinstance(one, dict) else None
            if not _number(value) or (name != "b" and value <= 0):
                raise bad(
                    f"recalibration.classes.{c}.{name}",
                    f"must be a {'positive' if name != 'b' else 'finite'} number; got {value!r}.",
                )


def _thresholds_file(workdir, classes, path=None) -> tuple[dict | None, str | None, bool]:
    """The thresholds file the calls of ``workdir``'s model are made at, read and checked
    before any checkpoint is: ``(record, why, given)`` where ``record`` is
    :func:`read_thresholds`'s (``None``, and ``why`` says why, where there is none fitting
    ``classes``) and ``given`` whether ``path`` named it. A given file for other classes is
    refused (``ValueError``); the workdir's own is passed over, with the reason."""
    if path is not None:
        found = read_thresholds(path)
        if found["classes"] != classes:
            raise ValueError(
                f"thresholds file {found['source']}: field 'classes' is {found['classes']}, "
                f"but the model's classes are {classes}: these are another model's thresholds."
            )
        return found, None, True
    own = workdir_thresholds(workdir)
    try:
        found = read_thresholds(own)
    except FileNotFoundError:
        return (
            None,
            (
                f"no thresholds: {own} does not exist (--mode=evaluate writes it, with the "
                "thresholds chosen on the validation split); evaluate the workdir, or give a "
                "thresholds file (--thresholds=PATH, load(..., thresholds=PATH))."
            ),
            False,
        )
    except ValueError as e:
        raise ValueError(f"{e} Evaluate again to write it anew, or move it away.") from None
    if found["classes"] != classes:
        return (
            None,
            (
                f"no thresholds: {own} is for the classes {found['classes']}, the model's are "
                f"{classes}; evaluate again."
            ),
            False,
        )
    return found, None, False


def _at_step(found, why, given: bool, step: int, which: str) -> tuple[dict | None, str | None]:
    """``(found, why)`` of :func:`_thresholds_file` once the restored checkpoint's ``step``
    is known: thresholds chosen at another step are none (with why) where they are the
    workdir's own, and refused where they were given. A given file whose ``step`` is null
    (thresholds not chosen at a checkpoint) is taken as it is."""
    if found is None or found["step"] == step:
        return found, why
    if given and found["step"] is None:
        return found, why
    if given:
        raise ValueError(
            f"thresholds file {found['source']}: field 'step' is {found['step']}, but the "
            f"restored checkpoint ({which}) is step {step}: these thresholds were chosen for "
            "another checkpoint. Give those of an evaluation at this checkpoint."
        )
    return None, (
        f"no thresholds: {found['source']} is from step {found['step']}, the restored "
        f"checkpoint ({which}) is step {step}; evaluate again, or give the thresholds.json "
        f"of an evaluation at step {step} (--thresholds=PATH, load(..., thresholds=PATH))."
    )


def model_thresholds(workdir, classes, step: int, path=None, which: str = "best"):
    """The thresholds the calls of ``workdir``'s model (``classes``, checkpoint ``step``)
    are made at: ``(record, why)``, ``record`` from :func:`read_thresholds` or ``None``
    and then ``why`` the reason. From the file ``path`` if given (refused with a
    ``ValueError`` unless it fits ``classes`` and ``step``, or has a null step); else from
    ``WORKDIR/eval/thresholds.json`` where it was written at ``step`` for ``classes``."""
    return _at_step(*_thresholds_file(workdir, list(classes), path), int(step), which)
