"""The bundle's command line.

  python -m chestattn_jax.bundle export --workdir=W --out=FILE [--checkpoint=best|latest]
  python -m chestattn_jax.bundle verify FILE
  python -m chestattn_jax.bundle predict FILE IMAGE... [--output_dir=OUT]

``export`` writes the bundle of a workdir's checkpoint; ``verify`` checks one part by
part (:mod:`chestattn_jax.bundle.verify`); ``predict`` scores images with the bundle alone
and prints what ``--mode=predict`` writes to ``predictions.json`` (with ``--output_dir``,
writes it there with one overlay PNG per image). A mistake ends in one ``FATAL`` line
naming the cause and exit status 1; an image that cannot be read is listed under
``errors`` and the others are still scored (exit status 1 all the same).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from chestattn_jax.data.raw import DataFormatError

USER_ERRORS = (ValueError, OSError, DataFormatError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chestattn_jax.bundle", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write the bundle of a workdir's checkpoint")
    e.add_argument("--workdir", required=True, help="the training run's folder")
    e.add_argument("--out", required=True, help="the bundle file to write")
    e.add_argument(
        "--checkpoint",
        default="best",
        type=_checkpoint,
        help="best (lowest validation score, the default), latest, or a step",
    )
    e.add_argument(
        "--platforms", default="cpu,cuda,tpu", help="jax.export platforms, comma-separated"
    )
    v = sub.add_parser("verify", help="check a bundle part by part")
    v.add_argument("bundle")
    r = sub.add_parser("predict", help="score images with a bundle")
    r.add_argument("bundle")
    r.add_argument("images", nargs="+")
    r.add_argument("--output_dir", default=None, help="write predictions.json and overlays here")
    r.add_argument("--batch_size", type=int, default=None)
    return p


def _checkpoint(text: str) -> str | int:
    """``--checkpoint``: ``best``, ``latest`` or a step number."""
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give best, latest or a step number.")


def _overlay_names(paths, taken=()) -> list[str]:
    """One unique overlay file name per path, none of ``taken`` (the inputs that lie in the
    output folder: an input is never written over): ``a.dcm`` -> ``a.png``, a second ``a``
    -> ``a_2.png`` (compared without case)."""
    used = {"predictions.json", *(n.lower() for n in taken)}
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


def _inputs_in(folder, paths) -> list[str]:
    """The names of those of ``paths`` that lie in ``folder`` itself."""
    here = os.path.normpath(os.path.abspath(folder))
    return [
        os.path.basename(p)
        for p in paths
        if os.path.dirname(os.path.normpath(os.path.abspath(p))) == here
    ]


def predict(path, images, output_dir=None, batch_size=None) -> dict:
    """Scores the files ``images`` with the bundle at ``path``: what ``--mode=predict``
    writes to ``predictions.json`` (``bundle`` in place of ``workdir``). Files that cannot
    be read are listed under ``errors``; each file is scored once (``repeated``)."""
    from chestattn_jax.bundle import inputs, runtime
    from chestattn_jax.data.images import letterbox

    model = runtime.load(path)
    if output_dir is not None and "predictions.json" in _inputs_in(output_dir, images):
        raise ValueError(
            f"{os.path.join(output_dir, 'predictions.json')} is one of the images, and the "
            "results would be written over it: give another --output_dir."
        )
    kept, seen, repeated = [], {}, {}
    for p in images:
        key = os.path.normpath(os.path.abspath(p))
        if key in seen:
            repeated[seen[key]] = repeated.get(seen[key], 1) + 1
            continue
        seen[key] = p
        kept.append(p)
    boxed, errors, warnings = {}, [], {}
    for p in kept:
        try:
            boxed[p] = letterbox(inputs.as_gray_uint8(p), model.image_size)
        except Exception as e:  # any reader or resize failure of this one file
            errors.append({"path": p, "error": f"{type(e).__name__}: {e}"})
            continue
        warnings[p] = inputs.view_warnings(p)
    ok = list(boxed)
    predictions = []
    if ok:
        probs, maps = model.predict_letterboxed(np.stack([boxed[p] for p in ok]), batch_size)
        calls, recalibrated = model.calls(probs), model.recalibrated(probs)
        taken = [] if output_dir is None else _inputs_in(output_dir, images)
        names = dict(zip(ok, _overlay_names(ok, taken), strict=True))
        for r, p in enumerate(ok):
            overlay = None
            if output_dir is not None:
                from chestattn_jax.reporting import plots

                os.makedirs(output_dir, exist_ok=True)
                overlay = plots.image_overlays(
                    boxed[p],
                    None if maps is None else maps[r],
                    model.classes,
                    probs[r],
                    os.path.join(output_dir, names[p]),
                    title=f"{os.path.basename(p)} ({model.variant} bundle, step {model.step})",
                )
            predictions.append(
                {
                    "path": p,
                    "probabilities": dict(zip(model.classes, probs[r].tolist(), strict=True)),
                    "calls": None if calls is None else calls[r],
                    "recalibrated_probabilities": None
                    if recalibrated is None
                    else dict(zip(model.classes, recalibrated[r].tolist(), strict=True)),
                    "overlay": overlay,
                    "warnings": warnings[p],
                }
            )
    result = {
        "bundle": os.path.abspath(os.fspath(path)),
        "checkpoint_step": model.step,
        "variant": model.variant,
        "image_size": model.image_size,
        "classes": model.classes,
        "thresholds": model.thresholds,
        "thresholds_why": model.thresholds_why,
        "predictions": predictions,
        "errors": errors,
        "repeated": [{"path": p, "times": n} for p, n in repeated.items()],
    }
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "predictions.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "export":
        from chestattn_jax.bundle.export import export_bundle
        from chestattn_jax.checkpointing import CheckpointError

        platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
        try:
            m = export_bundle(args.workdir, args.out, args.checkpoint, platforms)
        except (CheckpointError, ImportError) as e:  # ImportError: jax.export needs flatbuffers
            raise ValueError(str(e)) from None
        size = os.path.getsize(args.out)
        print(
            f"Wrote {args.out} ({size / 2**20:.1f} MiB): {m['model']['variant']} model, step "
            f"{m['model']['checkpoint']['step']}, {len(m['classes'])} classes, for "
            f"{', '.join(m['export']['platforms'])}."
        )
    elif args.command == "verify":
        from chestattn_jax.bundle.verify import verify

        for line in verify(args.bundle):
            print(f"ok  {line}")
        print(f"{args.bundle}: verified.")
    else:
        result = predict(args.bundle, args.images, args.output_dir, args.batch_size)
        print(json.dumps(result, indent=2))
        if result["errors"]:
            failed = ", ".join(e["path"] for e in result["errors"])
            total = len(result["predictions"]) + len(result["errors"])
            sys.exit(f"FATAL: {len(result['errors'])} of {total} images failed: {failed}")


def run(argv=None) -> None:
    """:func:`main`, a user's mistake ending in one ``FATAL`` line, not a traceback."""
    try:
        main(argv)
    except USER_ERRORS as e:
        sys.exit(f"FATAL: {' '.join(str(e).split())}")
