"""Writing a bundle: a trained model of a workdir as one file that runs without this
package's model code (``python -m chestattn_jax.bundle export``; docs/bundle.md).

The model is exported with ``jax.export`` as a function of ``(variables, images)``:
``images`` ``(batch, S, S, C)`` uint8, letterboxed, with a symbolic batch dimension;
normalisation happens inside. It returns ``{"logits", "probabilities", "maps" (attention
models), "global" (where the model computes g), "pooled": {gate: ĝ}}``, lowered for the
CPU, CUDA and TPU in one module. The variables are its argument, stored once in
``variables.npz``: docs/bundle.md gives the measurements behind that choice.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import os
import platform
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from chestattn_jax import bundle_file as bf
from chestattn_jax import config_fields as fields
from chestattn_jax import trained_model
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.bundle import card, runtime
from chestattn_jax.data import synthetic
from chestattn_jax.data.images import letterbox
from chestattn_jax.data.input_pipeline import normalize_images
from chestattn_jax.models import create_model

PLATFORMS = ("cpu", "cuda", "tpu")
# The platform names jax.export lowers for.
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# Reference images: phantoms of this seed (their indices 0..), the last cut to a
# 4:3 portrait so that letterboxing pads it.
REFERENCE_SEED = 20240
REFERENCE_IMAGES = 4
# How far verify lets the function's outputs stray from the stored ones: another
# platform (or XLA version) may sum in another order.
TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}

TASK = (
    "Multi-label classification of frontal chest radiographs: per class, the probability "
    "that the finding is present (independent sigmoids, not a softmax), with the "
    "attention maps that weighted the image features."
)

DICOM = {
    "reader": "pydicom",
    "frame": "the first frame of a multi-frame file",
    "modality_lut": "applied (Rescale Slope and Intercept, or the Modality LUT Sequence)",
    "voi_lut": (
        "applied: the VOI LUT Sequence where there is one, else the first Window Center / "
        "Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID), its output range "
        "mapped to 0-255; without either, the pixels' own min-max range"
    ),
    "monochrome1": "inverted, so that bone is bright as in MONOCHROME2 and every other format",
    "view_position": "not AP or PA: a warning (the models are trained on frontal views)",
}


def model_function(config):
    """``(variables, images uint8 (B, S, S, C)) -> outputs`` of ``config``'s model in
    evaluation mode, normalised as in training; outputs float32."""
    apply = create_model(config).apply
    mean, std = config.data.mean, config.data.std

    def fn(variables, images):
        logits, aux = apply(variables, normalize_images(images, mean, std), train=False)
        logits = logits.astype(jnp.float32)
        out = {"logits": logits, "probabilities": jax.nn.sigmoid(logits)}
        gate3 = aux["attention"].get("gate3")
        if gate3 is not None:
            out["maps"] = gate3.astype(jnp.float32)
        if "global" in aux:
            out["global"] = aux["global"].astype(jnp.float32)
        out["pooled"] = {k: v.astype(jnp.float32) for k, v in aux["pooled"].items()}
        return out

    return fn


def image_spec(config):
    """The images argument: ``(b, S, S, C)`` uint8 with a symbolic batch ``b``."""
    (b,) = jax.export.symbolic_shape("b")
    size = int(config.data.image_size)
    return jax.ShapeDtypeStruct((b, size, size, int(config.data.channels)), jnp.uint8)


def export_function(config, variables, platforms=PLATFORMS, baked: bool = False):
    """``jax.export.Exported`` of :func:`model_function`; ``baked``: the variables as
    constants of the module (a function of the images alone), else its first argument."""
    fn = model_function(config)
    if baked:
        constants = jax.tree.map(jnp.asarray, variables)
        return jax.export.export(
            jax.jit(lambda images: fn(constants, images)), platforms=platforms
        )(image_spec(config))
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), variables)
    return jax.export.export(jax.jit(fn), platforms=platforms)(specs, image_spec(config))


def reference_images(size: int, n: int = REFERENCE_IMAGES) -> np.ndarray:
    """``(n, S, S)`` uint8 letterboxed phantoms: the inputs whose outputs a bundle stores."""
    config = synthetic.PhantomConfig(image_size=size)
    images = [synthetic.render(REFERENCE_SEED, i, config)["image"] for i in range(n)]
    images[-1] = images[-1][:, size // 8 : size - size // 8]  # portrait, padded when boxed
    return np.stack([letterbox(im, size) for im in images]).astype(np.uint8)


def versions() -> dict:
    """The versions of what wrote the bundle."""
    out = {"python": platform.python_version()}
    for name in ("chestattn_jax", "jax", "jaxlib", "flax", "numpy", "ml_collections", "pydicom"):
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            module = sys.modules.get(name)
            out[name] = getattr(module, "__version__", None)
    return out


def evaluation_summary(workdir, step: int) -> tuple[dict | None, str | None]:
    """The summary of ``WORKDIR/eval/metrics.json`` where it was written at ``step``:
    ``(summary, None)``, or ``(None, why)``."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.EVAL_DIR / "metrics.json"
    try:
        m = workdir_lib.read_json(path)
    except ValueError as e:
        return None, f"{path} is not valid JSON ({e})."
    if m is None:
        return None, f"{path} does not exist: the workdir was not evaluated (--mode=evaluate)."
    if m.get("step") != step:
        return None, f"{path} is from step {m.get('step')}, the bundle's checkpoint is {step}."
    boot = m.get("bootstrap") or {}
    per_class = boot.get("classes") or {}
    auc = {
        c: {"value": v, "ci": (per_class.get(c) or {}).get("ci")}
        for c, v in (m.get("auc") or {}).items()
    }
    subgroups = [
        t
        for t in ((m.get("subgroups") or {}).get("page") or {}).get("tables", [])
        if "mean AUC" in t.get("title", "")
    ]
    return {
        "source": os.fspath(path),
        "split": m.get("split"),
        "step": step,
        "images": m.get("num_examples"),
        "dataset": m.get("dataset"),
        "level": boot.get("level"),
        "resampling": "patient bootstrap" if boot else None,
        "mean_auc": {"value": m.get("mean_auc"), "ci": boot.get("mean_ci")},
        "auc": auc,
        "undefined_classes": m.get("undefined_classes"),
        "pointing_game": (m.get("pointing_game") or {}).get("mean_hit_rate"),
        "subgroups": subgroups,
    }, None


# What a bundle records of where its model came from (write_bundle's ``record``): the
# workdir, its dataset.json, the evaluation summary and thresholds record at the checkpoint
# (or None, with why).
RECORD_FIELDS = (
    "workdir",
    "dataset",
    "evaluation",
    "evaluation_why",
    "thresholds",
    "thresholds_why",
)


def absent_outputs(config, outputs) -> dict:
    """Why each output a model of another variant gives is not among ``outputs``."""
    why = {}
    if "maps" not in outputs:
        why["maps"] = "the resnet model has no attention gates"
    if not any(k.startswith("pooled/") for k in outputs):
        why["pooled"] = "the resnet model has no gates: its classifier reads g"
    if "global" not in outputs:
        why["global"] = (
            "g is not computed: under pc + softmax stage 4 cannot change the outputs, and "
            "the model skips it (config.model.skip_unused_stage4)"
        )
    return why


def build_metadata(config, step: int, which: str, exported, variables, references: int, record):
    """``metadata.json``'s content (docs/bundle.md describes each field) for the model of
    ``config`` at checkpoint ``which`` (``step``), exported as ``exported`` with
    ``variables``, ``references`` reference images, and the provenance ``record``
    (:data:`RECORD_FIELDS`)."""
    signature = runtime.signature(exported)
    workdir, dataset = record.get("workdir"), record.get("dataset")
    classes = list(config.data.classes)
    size = int(config.data.image_size)
    out = signature["outputs"]
    meaning = {
        "logits": "per class the logit z; probability = sigmoid(z)",
        "probabilities": "per class sigmoid(logit), float32 (predict computes it in float64)",
        "maps": (
            "gate-3 attention map per class (class model): class j's weights over gate 3's "
            "positions, summing to 1 (softmax) or in [0, 1] (sigmoid)"
            if config.model.variant == "class"
            else "gate-3 attention map shared by all classes (image model)"
        ),
        "global": "g: stage 4's globally average-pooled features (an embedding)",
    }
    outputs = {}
    for name, spec in out.items():
        text = meaning.get(name)
        if name.startswith("pooled/"):
            text = f"ĝ of {name.split('/')[1]}: the attended features its classifier reads" + (
                ", per class (class j's own)" if len(spec["shape"]) == 3 else ""
            )
        outputs[name] = {**spec, "meaning": text}
    return {
        "format": bf.FORMAT,
        "format_version": bf.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions(),
        "export": {
            "serialisation": "jax.export",
            "platforms": list(exported.platforms),
            "calling_convention_version": exported.calling_convention_version,
            "function": bf.FUNCTION,
            "arguments": ["variables", "images"],
            "variables": "argument (stored once in variables.npz)",
        },
        "task": TASK,
        "model": {
            "name": f"chestattn_jax {config.model.variant}",
            "variant": config.model.variant,
            "backbone": {
                "stage_sizes": list(config.model.stage_sizes),
                "num_filters": int(config.model.num_filters),
                "gate_stages": list(config.model.gate_stages),
            },
            "attention": {
                "compatibility": config.model.compatibility,
                "normalisation": config.model.attention_norm,
                "dim": int(config.model.attention_dim),
            },
            "dtype": config.model.dtype,
            "checkpoint": {"which": which, "step": int(step)},
            "workdir": None if workdir is None else os.path.abspath(os.fspath(workdir)),
        },
        "classes": classes,
        "input": {
            "image_size": size,
            "channels": int(config.data.channels),
            "batch_size": int(config.eval.batch_size),
            "shape": signature["images"]["shape"],
            "dtype": signature["images"]["dtype"],
            "grayscale": (
                "8-bit grayscale; RGB and RGBA converted to luminance (alpha dropped); "
                "16-bit PNGs windowed to their own min-max range"
            ),
            "value_range": [0, 255],
            "letterbox": (
                f"resized (Pillow bilinear, reducing_gap 3), keeping the aspect ratio, so that "
                f"the longer side is {size}, centred and padded with zeros (black) to a square"
            ),
            "normalisation": {
                "mean": float(config.data.mean),
                "std": float(config.data.std),
                "formula": "(x / 255 - mean) / std, applied inside the function",
            },
            "dicom": DICOM,
            "arrays": "uint8 (0-255) or float in [0, 1] (scaled by 255 and rounded)",
        },
        "outputs": outputs,
        "outputs_absent": absent_outputs(config, outputs),
        "variables": {
            "file": bf.VARIABLES,
            "count": signature["variables"],
            "shapes": {
                key: list(np.shape(v)) for key, v in bf.flatten_variables(variables).items()
            },
        },
        "data": {
            "name": config.data.name,
            "fingerprint": (dataset or {}).get("fingerprint"),
            "records": (dataset or {}).get("num_records"),
            "phantoms": config.data.name == synthetic.SOURCE.name,
        },
        "evaluation": record.get("evaluation"),
        "evaluation_why": record.get("evaluation_why"),
        "thresholds": record.get("thresholds"),
        "thresholds_why": record.get("thresholds_why"),
        "reference": {
            "inputs": bf.REFERENCE_INPUTS,
            "outputs": bf.REFERENCE_OUTPUTS,
            "images": references,
            "made": f"synthetic phantoms (seed {REFERENCE_SEED}), the last a letterboxed portrait",
            "tolerance": TOLERANCE,
        },
        "model_card": bf.MODEL_CARD,
    }


def write_bundle(
    out, config, variables, step: int, which: str = "best", record=None, platforms=PLATFORMS
) -> dict:
    """Writes the bundle of ``config``'s model with ``variables`` (``{"params",
    "batch_stats"}``) of checkpoint ``which`` (``step``) to ``out`` (atomically: a partial
    file is never left under that name), with ``record`` (:data:`RECORD_FIELDS`, each
    absent as None); returns its metadata."""
    platforms = check_platforms(platforms)
    record = {k: (record or {}).get(k) for k in RECORD_FIELDS}
    for field, why in (
        ("evaluation", "no evaluation summary was given to the export."),
        ("thresholds", "no thresholds were given to the export."),
    ):
        if record[field] is None and record[f"{field}_why"] is None:
            record[f"{field}_why"] = why
    variables = {c: jax.device_get(variables.get(c, {})) for c in bf.COLLECTIONS}
    exported = export_function(config, variables, platforms)
    blob = bytes(exported.serialize())
    # The reference outputs are the deserialised function's, as a loader will run it.
    reference = reference_images(int(config.data.image_size))
    loaded = runtime.deserialize(out, blob)
    call = jax.jit(loaded.call)
    batch = np.asarray(reference)[..., None]
    outputs = runtime.flat_names(jax.device_get(call(variables, batch)))
    metadata = build_metadata(config, step, which, exported, variables, len(reference), record)
    members = {
        bf.METADATA: json.dumps(metadata, indent=2).encode(),
        bf.FUNCTION: blob,
        bf.VARIABLES: _npz(bf.flatten_variables(variables)),
        bf.CONFIG: json.dumps(fields.to_json(config), indent=2, sort_keys=True).encode(),
        bf.REFERENCE_INPUTS: _npy(reference),
        bf.REFERENCE_OUTPUTS: _npz({k: np.asarray(v) for k, v in outputs.items()}),
        bf.MODEL_CARD: card.model_card(metadata).encode(),
    }
    out = os.fspath(out)
    tmp = f"{out}.partial"
    try:
        with zipfile.ZipFile(tmp, "w") as z:
            for name, data in members.items():
                kind = (
                    zipfile.ZIP_DEFLATED if name.endswith((".json", ".md")) else zipfile.ZIP_STORED
                )
                z.writestr(name, data, compress_type=kind)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)  # no partial file left beside the output
        raise
    return metadata


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def check_platforms(platforms) -> tuple[str, ...]:
    """``platforms`` (``--platforms``) checked: known ``jax.export`` names
    (:data:`KNOWN_PLATFORMS`), each once, this machine's among them (the reference outputs
    are computed here, by the function as exported)."""
    platforms = tuple(platforms)
    given = f"--platforms={','.join(platforms)}"
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown:
        raise ValueError(
            f"{given}: unknown platform {', '.join(map(repr, unknown))}; give some of "
            f"{', '.join(KNOWN_PLATFORMS)}."
        )
    if len(set(platforms)) != len(platforms):
        raise ValueError(f"{given}: a platform is named twice.")
    here = runtime.local_platform()
    if here not in platforms:
        raise ValueError(
            f"{given} lacks this machine's platform, {here}: the export runs the function "
            f"here for its reference outputs, so include {here} (or export on a machine of "
            "one of them)."
        )
    return platforms


def check_out(out) -> None:
    """Refuses, before any work, an output path that is a folder or lies in none."""
    out = os.fspath(out)
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out={out} is a folder: give the bundle file's path.")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out={out}: the folder {parent} does not exist.")


def restore_step(workdir, step: int):
    """``(config, state, step)`` of checkpoint ``step`` of ``workdir``, under the config it
    was trained with (a missing step is a ``FileNotFoundError`` listing those there)."""
    workdir = os.fspath(workdir)
    problem = trained_model.not_a_run(workdir, "--workdir={run}")
    if problem:
        raise FileNotFoundError(problem)
    config = trained_model.workdir_config(workdir)
    state = trained_model.restore_checkpoint_step(config, workdir, step, f"--checkpoint={step}")
    return config, state, step


def export_bundle(workdir, out, checkpoint: str | int = "best", platforms=PLATFORMS) -> dict:
    """Writes the bundle of checkpoint ``checkpoint`` (``best``, ``latest`` or a step) of
    ``workdir`` to ``out``, with the workdir's data set fingerprint, its evaluation at that
    checkpoint and its thresholds (where written at that checkpoint); returns the
    metadata."""
    check_out(out)
    platforms = check_platforms(platforms)
    if isinstance(checkpoint, int):
        config, state, step = restore_step(workdir, checkpoint)
        thresholds, thresholds_why = trained_model.model_thresholds(
            workdir, config.data.classes, step, which=f"--checkpoint={step}"
        )
        which = "step"
    else:
        model = trained_model.load(os.fspath(workdir), checkpoint=checkpoint)
        config, state, step, which = model.config, model.state, model.step, checkpoint
        thresholds, thresholds_why = model.thresholds, model.thresholds_why
    root = workdir_lib.workdir_path(workdir)
    dataset = workdir_lib.read_json(root / workdir_lib.DATASET_FILE)
    evaluation, evaluation_why = evaluation_summary(workdir, step)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    record = {
        "workdir": workdir,
        "dataset": dataset,
        "evaluation": evaluation,
        "evaluation_why": evaluation_why,
        "thresholds": thresholds,
        "thresholds_why": thresholds_why,
    }
    return write_bundle(out, config, variables, step, which, record, platforms)
