"""``python -m chestattn_jax.bundle verify FILE``: a bundle checked part by part.

In order: the container (a zip with every member, metadata of a known format version),
the config (which must agree with the metadata where both record a field), the function
(deserialises inside this jaxlib's compatibility window), the metadata against the
function's real input and output shapes, the variables against the function's arguments,
and the reference inputs rerun against the stored outputs. The first part that fails
raises a :class:`~chestattn_jax.bundle_file.BundleError` naming it.
"""

from __future__ import annotations

import jax
import numpy as np

from chestattn_jax.bundle import runtime
from chestattn_jax.bundle_file import (
    FUNCTION,
    REFERENCE_INPUTS,
    REFERENCE_OUTPUTS,
    BundleError,
    open_bundle,
)


def _check_metadata(path, m: dict, exported) -> None:
    """The metadata's declared input, outputs, classes and export record against the
    function's own."""
    sig = runtime.signature(exported)

    def bad(field, declared, real):
        raise BundleError(
            path, "metadata", f"{field} is {declared!r}, but the function's is {real!r}."
        )

    inp = m.get("input") or {}
    if inp.get("shape") != sig["images"]["shape"]:
        bad("input.shape", inp.get("shape"), sig["images"]["shape"])
    if inp.get("dtype") != sig["images"]["dtype"]:
        bad("input.dtype", inp.get("dtype"), sig["images"]["dtype"])
    size = sig["images"]["shape"][1]
    if inp.get("image_size") != size:
        bad("input.image_size", inp.get("image_size"), size)
    if inp.get("channels") != sig["images"]["shape"][-1]:
        bad("input.channels", inp.get("channels"), sig["images"]["shape"][-1])
    declared = m.get("outputs") or {}
    if sorted(declared) != sorted(sig["outputs"]):
        bad("outputs (names)", sorted(declared), sorted(sig["outputs"]))
    for name, real in sig["outputs"].items():
        for key in ("shape", "dtype"):
            if (declared[name] or {}).get(key) != real[key]:
                bad(f"outputs.{name}.{key}", declared[name].get(key), real[key])
    k = sig["outputs"]["probabilities"]["shape"][1]
    if len(m.get("classes") or []) != k:
        bad("the number of classes", len(m.get("classes") or []), k)
    record = m.get("export") or {}
    if record.get("platforms") != list(exported.platforms):
        bad("export.platforms", record.get("platforms"), list(exported.platforms))
    if record.get("calling_convention_version") != exported.calling_convention_version:
        bad(
            "export.calling_convention_version",
            record.get("calling_convention_version"),
            exported.calling_convention_version,
        )


def _check_reference(path, bundle, inputs, stored: dict, tolerance: dict) -> int:
    """The function rerun on the reference inputs against the stored outputs; returns how
    many images were compared."""
    size = bundle.image_size
    if inputs.dtype != np.uint8 or inputs.ndim != 3 or inputs.shape[1:] != (size, size):
        raise BundleError(
            path,
            "reference inputs",
            f"{REFERENCE_INPUTS} holds {inputs.shape} {inputs.dtype}, not (N, {size}, {size}) "
            "uint8.",
        )
    got = bundle.run_letterboxed(inputs)
    if sorted(got) != sorted(stored):
        raise BundleError(
            path,
            "reference outputs",
            f"{REFERENCE_OUTPUTS} holds {sorted(stored)}, the function returns {sorted(got)}.",
        )
    atol, rtol = float(tolerance.get("atol", 1e-4)), float(tolerance.get("rtol", 1e-3))
    for name, want in stored.items():
        if want.shape != got[name].shape:
            raise BundleError(
                path,
                "reference outputs",
                f"{name} is stored as {want.shape}, the function gives {got[name].shape}.",
            )
        close = np.isclose(got[name], want, atol=atol, rtol=rtol)
        if not close.all():
            where = np.argwhere(~close)[0]
            diff = float(np.max(np.abs(got[name] - want)))
            raise BundleError(
                path,
                "reference outputs",
                f"{name} of reference image {int(where[0])} differs from the stored output "
                f"(largest difference {diff:.3g}; tolerance atol {atol:g}, rtol {rtol:g}).",
            )
    return len(inputs)


def _config_line(f) -> str:
    """What ``config.json`` is: a config of this package's version, or (no failure: the
    function runs without it) one that fine-tuning from the bundle needs another version
    for. Not a JSON object fails the ``config`` part."""
    missing = f.missing_config_fields()
    if missing:
        return (
            f"config: written by another version of chestattn_jax (without {', '.join(missing)})"
            ": the bundle predicts, but fine-tuning from it (trained_variables) needs that version"
        )
    f.config()
    return "config: readable by this version (trained_variables reads it)"


def verify(path) -> list[str]:
    """Checks the bundle at ``path``; returns what was checked, one line per part.
    Raises :class:`BundleError` naming the first part that fails."""
    done = []
    with open_bundle(path) as f:
        metadata = f.metadata
        done.append(
            f"container: a zip with every member, format version {metadata['format_version']}"
        )
        done.append(_config_line(f))
        blob = f.read(FUNCTION, "function")
        variables = f.variables()
        inputs = f.array(REFERENCE_INPUTS, "reference inputs")
        stored = f.arrays(REFERENCE_OUTPUTS, "reference outputs")
    exported = runtime.deserialize(path, blob)
    low, high = runtime.compatibility_window()
    done.append(
        f"function: jax.export calling convention {exported.calling_convention_version} "
        f"(this jaxlib runs {low}-{high}), platforms {', '.join(exported.platforms)}"
    )
    _check_metadata(path, metadata, exported)
    done.append("metadata: input, outputs, classes and export record match the function")
    runtime.check_variables(path, variables, exported)
    done.append(f"variables: {len(jax.tree.leaves(variables))} arrays fit the function")
    bundle = runtime.Bundle(path)
    tolerance = (metadata.get("reference") or {}).get("tolerance") or {}
    n = _check_reference(path, bundle, inputs, stored, tolerance)
    done.append(f"reference outputs: {n} images rerun on {jax.default_backend()} match")
    return done
