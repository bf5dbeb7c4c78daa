"""A bundle loaded for prediction: the deserialised ``jax.export`` function and the
variables it takes, run with jax and numpy only (no model code, flax or optax).

  from chestattn_jax import bundle
  model = bundle.load("nih_class.chestattn.zip")
  out = model.predict(["a.png", "b.dcm"])    # as chestattn_jax.load(workdir).predict
  emb = model.embed(["a.png"])               # {"global": g | None, "gate1": ĝ1, ...}
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax import export

from chestattn_jax import image_inputs
from chestattn_jax.bundle_file import FUNCTION, MODEL_CARD, BundleError, open_bundle
from chestattn_jax.calibration import apply_recalibration

# Name of the symbolic batch dimension in the metadata's shapes.
BATCH = "batch"


def compatibility_window() -> tuple[int, int]:
    """The ``jax.export`` calling-convention versions this jax/jaxlib runs: ``(min, max)``."""
    return (
        export.minimum_supported_calling_convention_version,
        export.maximum_supported_calling_convention_version,
    )


def deserialize(path, blob: bytes):
    """The ``jax.export.Exported`` serialised in ``blob``, checked to be inside this jaxlib's
    compatibility window."""
    try:
        exported = export.deserialize(bytearray(blob))
    except Exception as e:  # flatbuffers and jax raise many kinds for a damaged blob
        raise BundleError(
            path, "function", f"{FUNCTION} cannot be deserialised ({type(e).__name__}: {e})."
        ) from None
    version = exported.calling_convention_version
    low, high = compatibility_window()
    if not low <= version <= high:
        raise BundleError(
            path,
            "function",
            f"exported with jax.export calling convention {version}, outside this "
            f"jax {jax.__version__} / jaxlib {_jaxlib_version()}'s compatibility window "
            f"[{low}, {high}]: install the jax and jaxlib of metadata.json's versions (or "
            "export the bundle again with this one).",
        )
    return exported


def _jaxlib_version() -> str:
    import jaxlib

    return getattr(jaxlib, "__version__", "?")


def _dims(shape) -> list:
    """A shape with its symbolic dimension written :data:`BATCH`."""
    return [d if isinstance(d, int) else BATCH for d in shape]


def flat_names(tree, prefix: str = "") -> dict:
    """``{"pooled/gate3": leaf, ...}``: a nested dict's leaves by their ``/`` paths."""
    out = {}
    for k in sorted(tree):
        v = tree[k]
        if isinstance(v, dict):
            out.update(flat_names(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def signature(exported) -> dict:
    """What the exported function takes and returns, as the metadata records it:
    ``{"images": {"shape", "dtype"}, "variables": n, "outputs": {name: {"shape",
    "dtype"}}}``, the batch dimension written ``"batch"``."""
    images = exported.in_avals[-1]
    outs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
    return {
        "images": {"shape": _dims(images.shape), "dtype": str(images.dtype)},
        "variables": len(exported.in_avals) - 1,
        "outputs": {
            name: {"shape": _dims(a.shape), "dtype": str(a.dtype)}
            for name, a in flat_names(outs).items()
        },
    }


def check_variables(path, variables, exported) -> None:
    """The stored variables against the function's variables argument: as many arrays,
    each of the shape and dtype it takes."""
    leaves = jax.tree.leaves(variables)
    wanted = exported.in_avals[:-1]
    if len(leaves) != len(wanted):
        raise BundleError(
            path,
            "variables",
            f"{len(leaves)} arrays stored, the function takes {len(wanted)}.",
        )
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    for (key, leaf), aval in zip(flat, wanted, strict=True):
        if tuple(np.shape(leaf)) != tuple(aval.shape) or np.dtype(leaf.dtype) != aval.dtype:
            raise BundleError(
                path,
                "variables",
                f"{jax.tree_util.keystr(key)} is {np.shape(leaf)} {leaf.dtype}, the function "
                f"takes {aval.shape} {aval.dtype}.",
            )


def output_classes(path, exported) -> int:
    """How many classes the function scores (its ``probabilities`` output's second
    dimension)."""
    out = signature(exported)["outputs"].get("probabilities")
    if out is None or len(out["shape"]) != 2 or not isinstance(out["shape"][1], int):
        raise BundleError(path, "function", "has no (batch, k) probabilities output.")
    return out["shape"][1]


def local_platform() -> str:
    """This machine's ``jax.export`` platform: ``cpu``, ``cuda``, ``rocm`` or ``tpu``."""
    return export.default_export_platform()


def check_platform(path, exported) -> None:
    """Refuses a function not exported for this machine's platform."""
    here = local_platform()
    if here not in exported.platforms:
        raise BundleError(
            path,
            "function",
            f"exported for {', '.join(exported.platforms)}, not for this machine's {here} "
            f"(jax.default_backend() {jax.default_backend()!r}): export the bundle again with "
            f"--platforms including {here}.",
        )


def _get(path, metadata, dotted: str, kind):
    """Field ``dotted`` of ``metadata``, which must be of type ``kind``."""
    node = metadata
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(path, "metadata", f"field {dotted!r} is missing.")
        node = node[part]
    if not isinstance(node, kind) or (isinstance(node, bool) and kind is not bool):
        raise BundleError(path, "metadata", f"field {dotted!r} is {node!r}, not a {kind.__name__}.")
    return node


class Bundle:
    """A loaded bundle: ``predict`` and ``embed`` on files or arrays. ``classes``,
    ``variant``, ``image_size``, ``step``, ``metadata`` and ``model_card`` describe it;
    ``thresholds`` are those its calls are made at (or ``None``, and ``thresholds_why``
    says why)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open_bundle(self.path) as f:
            self.metadata = f.metadata
            blob = f.read(FUNCTION, "function")
            variables = f.variables()
            self.model_card = f.read(MODEL_CARD, "model card").decode("utf-8", "replace")
        m = self.metadata
        self.classes = list(_get(self.path, m, "classes", list))
        self.variant = _get(self.path, m, "model.variant", str)
        self.image_size = _get(self.path, m, "input.image_size", int)
        self.channels = _get(self.path, m, "input.channels", int)
        self.batch_size = _get(self.path, m, "input.batch_size", int)
        self.step = _get(self.path, m, "model.checkpoint.step", int)
        self.thresholds = m.get("thresholds")
        self.thresholds_why = m.get("thresholds_why")
        self.exported = deserialize(self.path, blob)
        check_platform(self.path, self.exported)
        check_variables(self.path, variables, self.exported)
        k = output_classes(self.path, self.exported)
        if len(self.classes) != k:
            raise BundleError(
                self.path,
                "metadata",
                f"classes lists {len(self.classes)} classes, the function gives {k} probabilities.",
            )
        self._variables = jax.device_put(variables)
        self._call = jax.jit(
            self.exported.call, compiler_options=image_inputs.cpu_inference_options()
        )

    def run_letterboxed(self, images, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every output of the function (``logits``, ``probabilities``, ``maps``,
        ``global``, ``pooled/gate1``...: :func:`signature`'s names) for ``(N, S, S)`` uint8
        images already letterboxed to ``image_size``, in batches of ``batch_size`` (default
        the bundle's, or N if fewer)."""
        image_inputs.check_batch_size(batch_size)
        images = np.asarray(images)
        size = self.image_size
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
            raise ValueError(
                f"the bundle takes (N, {size}, {size}) uint8 letterboxed images; got "
                f"{images.shape} {images.dtype}."
            )
        n = len(images)
        batch_size = max(1, min(batch_size or self.batch_size, n))
        parts: dict[str, list] = {}
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            batch = np.zeros((batch_size, size, size, self.channels), np.uint8)
            batch[: len(chunk)] = chunk[..., None]
            try:
                out = self._call(self._variables, batch)
            except Exception as e:  # XLA and jax.export raise many kinds; one line each
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise BundleError(
                    self.path,
                    "function",
                    f"does not run on this jax {jax.__version__} / {jax.default_backend()} "
                    f"(exported for {', '.join(self.exported.platforms)}): "
                    f"{type(e).__name__}: {first}",
                ) from None
            for name, value in flat_names(jax.device_get(out)).items():
                parts.setdefault(name, []).append(np.asarray(value)[: len(chunk)])
        return {name: np.concatenate(v) for name, v in parts.items()}

    def predict_letterboxed(self, images, batch_size: int | None = None):
        """``(N, S, S)`` uint8 letterboxed images -> ``(probabilities (N, k) float64, maps
        or None)``: the probabilities from the float32 logits, in float64, as
        :meth:`chestattn_jax.trained_model.Model.predict_letterboxed` computes them."""
        out = self.run_letterboxed(images, batch_size)
        logits = out["logits"].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logits)), out.get("maps")

    def letterboxed(self, images) -> tuple[np.ndarray, list]:
        """``images`` (see :meth:`predict`) read, converted and letterboxed:
        ``((N, S, S) uint8, warnings per image)``."""
        return image_inputs.letterboxed(images, self.image_size, "predict")

    def calls(self, probs) -> list[dict] | None:
        """Per row of ``(N, k)`` probabilities, whether each class's is at least its
        threshold (``None`` for a class without one); ``None`` without thresholds."""
        if self.thresholds is None:
            return None
        return image_inputs.calls(probs, self.classes, self.thresholds["values"])

    def recalibrated(self, probs) -> np.ndarray | None:
        """The probabilities through the recalibration stored with the thresholds."""
        params = (self.thresholds or {}).get("recalibration")
        return None if params is None else apply_recalibration(probs, params)

    def predict(self, images, batch_size: int | None = None) -> dict:
        """What :meth:`chestattn_jax.trained_model.Model.predict` returns for ``images``
        (a path, a list of paths and arrays, or an array; uint8 or float in [0, 1]):
        ``{"probabilities": (N, k) float64, "maps": (N, k, h, w) | (N, h, w) | None,
        "images": (N, S, S) uint8, "classes", "warnings", "calls", "recalibrated_probabilities",
        "thresholds", "thresholds_why"}``, computed by the bundle's function alone."""
        image_inputs.check_batch_size(batch_size)
        boxed, warnings = self.letterboxed(images)
        return image_inputs.predictions(self, boxed, warnings, batch_size)

    def embed(self, images, batch_size: int | None = None) -> dict:
        """What :meth:`chestattn_jax.trained_model.Model.embed` returns for ``images``: the
        features the classifiers read, for linear probes. ``{"global": (N, C4) | None,
        "gate1": (N, C1) | None, "gate2": (N, C2) | None, "gate3": (N, C3) | (N, k, C3) |
        None, "classes": [...], "warnings": [[str], ...]}``, float32: ``global`` is g
        (``None`` where the model skips stage 4), ``gateS`` gate S's attended ĝS (``None``
        for resnet); for the class model ``gate3[:, j]`` is class j's own ĝ3."""
        image_inputs.check_batch_size(batch_size)
        boxed, warnings = self.letterboxed(images)
        out = self.run_letterboxed(boxed, batch_size)
        features = {"global": out.get("global")}
        for gate in ("gate1", "gate2", "gate3"):
            features[gate] = out.get(f"pooled/{gate}")
        return {**features, "classes": self.classes, "warnings": warnings}


def load(path) -> Bundle:
    """The bundle file at ``path``, ready to predict. Raises
    :class:`~chestattn_jax.bundle_file.BundleError` naming the part that cannot be used."""
    return Bundle(path)
