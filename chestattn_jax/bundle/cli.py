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


def predict(path, images, output_dir=None, batch_size=None) -> dict:
    """Scores the files ``images`` with the bundle at ``path``: what ``--mode=predict``
    writes to ``predictions.json`` (``bundle`` in place of ``workdir``), by the same code
    (:func:`chestattn_jax.predict_images.score_files`). Files that cannot be read are
    listed under ``errors``; each file is scored once (``repeated``). Nothing is written
    without ``output_dir``."""
    from chestattn_jax import predict_images
    from chestattn_jax.bundle import runtime

    paths, repeated = predict_images.distinct_paths(images)
    model = runtime.load(path)
    if output_dir is not None:
        predict_images.check_output_dir(output_dir, paths, "images")
    source = {"bundle": os.path.abspath(os.fspath(path))}
    return predict_images.score_files(
        model, paths, repeated, output_dir, source, "bundle", batch_size
    )


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
