"""The bundle file (``python -m chestattn_jax.bundle export``): reading it back.

A bundle is one zip file holding:

- ``metadata.json``: what the model is and the contract of its inputs and outputs
  (:mod:`chestattn_jax.bundle`, docs/bundle.md); its ``format`` and ``format_version``
  say how to read the rest;
- ``model.jax_exported``: the model as a serialised ``jax.export`` function of
  ``(variables, images)``;
- ``variables.npz``: the trained variables (``params`` and ``batch_stats``), one array per
  tree path (``params/backbone/stem_conv/kernel``), passed to that function as its first
  argument and read back here as the tree flax's train state holds;
- ``config.json``: the config the model was trained with (as ``WORKDIR/config.json``);
- ``reference/inputs.npy`` and ``reference/outputs.npz``: letterboxed images and what the
  function gave for them at export;
- ``MODEL_CARD.md``: the model card, written from the metadata.

This module reads the file with numpy, zipfile and ml_collections only (the layer of the
package that training may use: ``config.model.init_from`` starts from
:func:`trained_variables`). Every reason a file cannot be read is a :class:`BundleError`
whose one line names the file and the part.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib

import ml_collections
import numpy as np

from chestattn_jax import config_fields as fields
from chestattn_jax.config import get_base_config

FORMAT = "chestattn-jax bundle"
FORMAT_VERSION = 1

METADATA = "metadata.json"
FUNCTION = "model.jax_exported"
VARIABLES = "variables.npz"
CONFIG = "config.json"
REFERENCE_INPUTS = "reference/inputs.npy"
REFERENCE_OUTPUTS = "reference/outputs.npz"
MODEL_CARD = "MODEL_CARD.md"
MEMBERS = (METADATA, FUNCTION, VARIABLES, CONFIG, REFERENCE_INPUTS, REFERENCE_OUTPUTS, MODEL_CARD)

# The collections of a flax variables tree that a bundle holds, in this order.
COLLECTIONS = ("params", "batch_stats")

# The fields of config.json that metadata.json records too, and where: they must agree.
CONFIG_IN_METADATA = (
    ("data.classes", "classes"),
    ("model.variant", "model.variant"),
    ("data.image_size", "input.image_size"),
    ("data.channels", "input.channels"),
    ("data.mean", "input.normalisation.mean"),
    ("data.std", "input.normalisation.std"),
)
_ABSENT = object()

# The fields of metadata.json that the readers use, parents before children, and the JSON
# types each must have (a number: int or float; never a bool).
NUMBER = (int, float)
METADATA_FIELDS = {
    "classes": list,
    "model": dict,
    "model.variant": str,
    "model.checkpoint": dict,
    "model.checkpoint.step": int,
    "input": dict,
    "input.image_size": int,
    "input.channels": int,
    "input.batch_size": int,
    "input.shape": list,
    "input.dtype": str,
    "input.normalisation": dict,
    "input.normalisation.mean": NUMBER,
    "input.normalisation.std": NUMBER,
    "outputs": dict,
    "variables": dict,
    "variables.shapes": dict,
    "export": dict,
    "export.platforms": list,
    "export.calling_convention_version": int,
    "reference": dict,
    "reference.tolerance": dict,
    "reference.tolerance.atol": NUMBER,
    "reference.tolerance.rtol": NUMBER,
}


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming the file and the part
    (``container``, ``metadata``, ``function``, ``variables``, ``reference outputs``...)."""

    def __init__(self, path, part: str, text: str):
        self.path, self.part = os.fspath(path), part
        super().__init__(f"{self.path}: {part}: {text}")


def flatten_variables(variables) -> dict[str, np.ndarray]:
    """A nested dict of arrays -> ``{"params/a/b/kernel": array}``, keys in tree order."""
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict) or hasattr(node, "items"):
            for k in sorted(node):
                if "/" in str(k):
                    raise ValueError(f"a variable name holds '/': {prefix}{k!r}")
                walk(f"{prefix}{k}/", node[k])
        else:
            flat[prefix[:-1]] = np.asarray(node)

    walk("", variables)
    return flat


def unflatten_variables(flat) -> dict:
    """:func:`flatten_variables` undone: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    tree: dict = {}
    for key, value in flat.items():
        *parents, last = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


class BundleFile:
    """An open bundle: its members read and checked on demand. ``metadata`` is read (and
    its format checked) on opening."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise BundleError(self.path, "container", "no such file.")
        if os.path.isdir(self.path):
            raise BundleError(self.path, "container", "is a folder, not a bundle file.")
        try:
            self.zip = zipfile.ZipFile(self.path)
            names = set(self.zip.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise BundleError(
                self.path,
                "container",
                f"not a readable zip file ({e}): truncated, damaged or not a bundle "
                "(python -m chestattn_jax.bundle export writes one).",
            ) from None
        try:
            self._check(names)
        except BaseException:
            self.zip.close()  # a refused file is not left open
            raise

    def _check(self, names) -> None:
        """Reads ``metadata`` and checks the members ``names`` and the metadata."""
        missing = [m for m in MEMBERS if m not in names]
        if METADATA in missing:
            raise BundleError(
                self.path, "container", f"a zip file without {METADATA}: not a bundle."
            )
        self.metadata = check_format(self.path, self._json(METADATA, "metadata"))
        if missing:
            raise BundleError(
                self.path, "container", "members missing: " + ", ".join(missing) + "."
            )
        check_metadata(self.path, self.metadata)

    def read(self, name: str, part: str) -> bytes:
        """The bytes of member ``name``; a damaged one raises naming ``part``."""
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, ValueError) as e:
            # zlib.error: damaged compressed data; BadZipFile: also a CRC mismatch.
            raise BundleError(
                self.path, part, f"{name} cannot be read ({type(e).__name__}: {e}): damaged."
            ) from None

    def _json(self, name: str, part: str):
        data = self.read(name, part)  # its BundleError passes unchanged
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(self.path, part, f"{name} is not valid JSON ({e}).") from None

    def arrays(self, name: str, part: str) -> dict[str, np.ndarray]:
        """The arrays of the ``.npz`` member ``name``."""
        data = self.read(name, part)  # its BundleError passes unchanged
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise BundleError(self.path, part, f"{name} is not a readable npz ({e}).") from None

    def array(self, name: str, part: str) -> np.ndarray:
        """The array of the ``.npy`` member ``name``."""
        data = self.read(name, part)  # its BundleError passes unchanged
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise BundleError(self.path, part, f"{name} is not a readable npy ({e}).") from None

    def variables(self) -> dict:
        """The trained variables, ``{"params": ..., "batch_stats": ...}`` of numpy arrays,
        checked against the tree and shapes the metadata records."""
        flat = self.arrays(VARIABLES, "variables")
        recorded = self.metadata.get("variables", {}).get("shapes", {})
        if sorted(flat) != sorted(recorded):
            extra = sorted(set(flat) - set(recorded))[:3]
            lost = sorted(set(recorded) - set(flat))[:3]
            raise BundleError(
                self.path,
                "variables",
                f"{VARIABLES} does not hold the variables metadata.json lists "
                f"(not listed: {extra}; missing: {lost}).",
            )
        for key, shape in recorded.items():
            if list(flat[key].shape) != list(shape):
                raise BundleError(
                    self.path,
                    "variables",
                    f"{key} has shape {list(flat[key].shape)}, metadata.json says {shape}.",
                )
        tree = unflatten_variables(flat)
        return {c: tree.get(c, {}) for c in COLLECTIONS}

    def config_json(self) -> dict:
        """``config.json`` as written, checked to be a JSON object."""
        saved = self._json(CONFIG, "config")
        if not isinstance(saved, dict):
            raise BundleError(self.path, "config", f"{CONFIG} is not an object.")
        check_config_agrees(self.path, saved, self.metadata)
        return saved

    def missing_config_fields(self) -> list[str]:
        """The fields of this version's config that ``config.json`` lacks (written by an
        older version); empty where it is this version's."""
        return list(fields.missing_fields(self.config_json(), get_base_config()))

    def config(self) -> ml_collections.ConfigDict:
        """The config the model was trained with, which must be of this package's version."""
        missing = self.missing_config_fields()
        if missing:
            raise BundleError(
                self.path,
                "config",
                fields.not_this_version(
                    CONFIG,
                    missing,
                    "Read it with the version that wrote the bundle (metadata.json's "
                    "versions.chestattn_jax), or export it again from a workdir of this one.",
                ),
            )
        return ml_collections.ConfigDict(fields.from_json(self.config_json()))

    def close(self) -> None:
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_format(path, metadata) -> dict:
    """``metadata`` (``metadata.json``'s content) after checking that it names this format
    at a version this package reads."""
    if not isinstance(metadata, dict):
        raise BundleError(path, "metadata", f"{METADATA} is not an object.")
    if metadata.get("format") != FORMAT:
        raise BundleError(
            path,
            "metadata",
            f"format is {metadata.get('format')!r}, not {FORMAT!r}: not a chestattn-jax bundle.",
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            path,
            "metadata",
            f"format_version {version!r} is not one this package reads ({FORMAT_VERSION}): "
            "export the bundle again with this version, or read it with the version that "
            "wrote it (metadata.json's versions.chestattn_jax).",
        )
    return metadata


def _dotted(tree, dotted: str):
    """Field ``dotted`` (``a.b.c``) of the nested dict ``tree``, or ``_ABSENT``."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _same(a, b) -> bool:
    """Whether two JSON values say the same (numbers by value, lists item by item)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    return type(a) is type(b) and a == b


def check_config_agrees(path, saved: dict, metadata: dict) -> None:
    """Refuses a ``config.json`` (``saved``) that says otherwise than ``metadata`` about
    a field both record (:data:`CONFIG_IN_METADATA`); a field ``config.json`` lacks (of
    an older version) is not compared."""
    for field, where in CONFIG_IN_METADATA:
        mine, theirs = _dotted(saved, field), _dotted(metadata, where)
        if mine is _ABSENT or (theirs is not _ABSENT and _same(mine, theirs)):
            continue
        said = "lacks it" if theirs is _ABSENT else f"says {theirs!r}"
        raise BundleError(
            path,
            "config",
            f"{CONFIG}'s {field} is {mine!r}, but {METADATA}'s {where} {said}: the members "
            "are of different models.",
        )


def _kind(value) -> str:
    """A JSON value's type as metadata.json's readers name it."""
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), "a number"
    )


def _is(value, kind) -> bool:
    """Whether ``value`` is of the JSON type ``kind`` (a bool is never a number)."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_metadata(path, m: dict) -> None:
    """Refuses a ``metadata.json`` (``m``) whose fields the readers use
    (:data:`METADATA_FIELDS`, each output's and variable's record, the thresholds) are
    missing or of another type, in one line naming the field."""

    def bad(field, text):
        raise BundleError(path, "metadata", f"field {field!r} {text}")

    names = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
    for dotted, kind in METADATA_FIELDS.items():
        value = _dotted(m, dotted)
        if value is _ABSENT:
            bad(dotted, "is missing.")
        if not _is(value, kind):
            wanted = names.get(kind, "a number")
            bad(dotted, f"is {_kind(value)} ({_short(value)}), not {wanted}.")
    if not all(isinstance(c, str) for c in m["classes"]) or len(set(m["classes"])) < len(
        m["classes"]
    ):
        bad("classes", f"must be a list of distinct class names; got {_short(m['classes'])}.")
    for name, spec in m["outputs"].items():
        if not isinstance(spec, dict):
            bad(f"outputs.{name}", f"is {_kind(spec)}, not an object.")
        if not isinstance(spec.get("shape"), list) or not isinstance(spec.get("dtype"), str):
            bad(f"outputs.{name}", "must hold a shape (a list) and a dtype (a string).")
    for key, shape in m["variables"]["shapes"].items():
        if not isinstance(shape, list) or not all(_is(d, int) and d >= 0 for d in shape):
            bad(f"variables.shapes.{key}", f"must be a list of sizes; got {_short(shape)}.")
    check_thresholds(path, m.get("thresholds"), m["classes"])
    why = m.get("thresholds_why")
    if why is not None and not isinstance(why, str):
        bad("thresholds_why", f"is {_kind(why)}, not a string or null.")


def _probability(x) -> bool:
    return _is(x, NUMBER) and math.isfinite(x) and 0.0 <= x <= 1.0


def check_thresholds(path, record, classes) -> None:
    """Refuses a ``thresholds`` record of ``metadata.json`` that calls cannot be made at:
    ``null``, or an object whose ``values`` give each of ``classes`` (and no other) a
    probability in [0, 1] or null, and whose ``recalibration`` is null or holds each
    class's positive ``temperature`` or ``a`` and finite ``b``, for ``classes`` in order."""

    def bad(field, text):
        raise BundleError(path, "metadata", f"field {field!r} {text}")

    if record is None:
        return
    if not isinstance(record, dict):
        bad("thresholds", f"is {_kind(record)} ({_short(record)}), not an object or null.")
    values = record.get("values")
    if not isinstance(values, dict):
        bad(
            "thresholds.values",
            f"must map each class to a threshold or null; got {_short(values)}.",
        )
    for c in classes:
        if c not in values:
            bad(f"thresholds.values.{c}", "is missing (null for a class without a threshold).")
        if values[c] is not None and not _probability(values[c]):
            bad(f"thresholds.values.{c}", f"must be in [0, 1] or null; got {_short(values[c])}.")
    for c in values:
        if c not in classes:
            bad(f"thresholds.values.{c}", "names a class the model does not score.")
    params = record.get("recalibration")
    if params is None:
        return
    if not isinstance(params, dict):
        bad("thresholds.recalibration", f"is {_kind(params)}, not an object or null.")
    if params.get("class_names") != list(classes):
        bad("thresholds.recalibration.class_names", f"must be the model's classes, {classes}.")
    per_class = params.get("classes")
    for c in classes:
        one = per_class.get(c) if isinstance(per_class, dict) else None
        names = ("temperature",) if isinstance(one, dict) and "temperature" in one else ("a", "b")
        for name in names:
            value = one.get(name) if isinstance(one, dict) else None
            if not (_is(value, NUMBER) and math.isfinite(value)) or (name != "b" and value <= 0):
                bad(
                    f"thresholds.recalibration.classes.{c}.{name}",
                    f"must be a {'finite' if name == 'b' else 'positive'} number; got "
                    f"{_short(value)}.",
                )


def open_bundle(path) -> BundleFile:
    """The bundle at ``path``, its metadata read and its format version checked."""
    return BundleFile(path)


def trained_variables(path) -> tuple[ml_collections.ConfigDict, dict]:
    """The config and the trained variables of the bundle at ``path``: ``(config,
    {"params": tree, "batch_stats": tree})``, numpy arrays as flax's train state holds
    them (for ``config.model.init_from``). Raises :class:`BundleError` naming the part."""
    with open_bundle(path) as bundle:
        return bundle.config(), bundle.variables()
