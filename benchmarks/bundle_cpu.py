"""Prediction on a CPU: the bundle against the workdir path and the PyTorch reference.

For one model (default: the ResNet-50 class model, 14 classes, 224 px) it builds a workdir
(freshly initialised variables saved as a checkpoint, with its config.json: speed does not
depend on the values), exports its bundle, and in one process measures

- first-call latency: loading plus compiling plus the first batch, of the bundle
  (``chestattn_jax.bundle.load(FILE)``), of the workdir (``chestattn_jax.load(W)``), of
  PyTorch eager and of ``torch.compile`` (the reference model of
  ``benchmarks/train_step.py``, imported from there);
- images/s of ``predict_letterboxed`` (bundle and workdir: letterboxed uint8 in,
  probabilities and maps out) and of the PyTorch forward pass in inference mode, after a
  warm-up, the four alternating batch by batch (median of the timed batches);
- the bundle's file size; with ``--baked`` also a second export with the variables baked
  into the function as constants: its size and its first-call latency.

  python benchmarks/bundle_cpu.py                      # 224 px, batch 8, 5 timed batches
  python benchmarks/bundle_cpu.py --size=64 --batch=4 --steps=2 --output=  # a quick look

The table is appended to BENCHMARKS.md (``--output=`` for none).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def make_workdir(workdir: pathlib.Path, variant: str, size: int, batch: int, classes: int):
    """A workdir holding one checkpoint (step 0) of freshly initialised variables."""
    import jax

    from chestattn_jax import sharding as shd
    from chestattn_jax import workdir as workdir_lib
    from chestattn_jax.checkpointing import Checkpointer
    from chestattn_jax.config import get_base_config
    from chestattn_jax.data.classes import NIH_CLASSES
    from chestattn_jax.models import create_model
    from chestattn_jax.train_state import create_optimizer, create_train_state

    config = get_base_config()
    config.model.variant = variant
    config.data.image_size = size
    config.data.classes = tuple(NIH_CLASSES[:classes])
    config.eval.batch_size = batch
    mesh = shd.make_mesh()
    state = create_train_state(
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(0),
        (size, size, config.data.channels),
        shd.replicated(mesh),
    )
    workdir.mkdir(parents=True)
    workdir_lib.write_text(
        workdir / workdir_lib.CONFIG_FILE, config.to_json_best_effort(indent=2) + "\n"
    )
    checkpointer = Checkpointer(str(workdir))
    checkpointer.save(0, state, None, {}, val_loss=1.0)
    checkpointer.close()
    return config


def machine() -> str:
    from train_step import machine as train_step_machine

    return train_step_machine()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="class")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=14)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--baked", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--torch_modes", default="eager,compile")
    p.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = p.parse_args(argv)

    import jax

    import chestattn_jax
    from chestattn_jax import bundle
    from chestattn_jax.bundle import export as bundle_export

    where = machine()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bundle_cpu_"))
    config = make_workdir(tmp / "w", args.variant, args.size, args.batch, args.classes)
    rows, first = {}, {}

    t = time.perf_counter()
    bundle_export.export_bundle(tmp / "w", tmp / "model.zip")
    export_s = time.perf_counter() - t
    size_mb = os.path.getsize(tmp / "model.zip") / 2**20
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size), np.uint8)

    t = time.perf_counter()
    model_b = bundle.load(tmp / "model.zip")
    model_b.predict_letterboxed(images)
    first["bundle"] = time.perf_counter() - t
    t = time.perf_counter()
    model_w = chestattn_jax.load(str(tmp / "w"))
    model_w.predict_letterboxed(images)
    first["workdir"] = time.perf_counter() - t
    fns = {
        "bundle": lambda: model_b.predict_letterboxed(images),
        "workdir": lambda: model_w.predict_letterboxed(images),
    }

    baked = None
    if args.baked:
        variables = {"params": model_w.state.params, "batch_stats": model_w.state.batch_stats}
        variables = jax.device_get(variables)
        t = time.perf_counter()
        blob = bytes(bundle_export.export_function(config, variables, baked=True).serialize())
        baked_export_s = time.perf_counter() - t
        t = time.perf_counter()
        exp = jax.export.deserialize(bytearray(blob))
        jax.device_get(jax.jit(exp.call)(images[..., None]))
        baked = {
            "size_mb": len(blob) / 2**20,
            "first_s": time.perf_counter() - t,
            "export_s": baked_export_s,
        }
        del exp, blob

    from train_step import torch_available, torch_reference

    modes = [m for m in args.torch_modes.split(",") if m] if torch_available() else []
    for mode in modes:
        import torch

        t = time.perf_counter()
        torch.manual_seed(0)
        net = torch_reference(args.variant, args.classes, config.model.skip_unused_stage4).eval()
        forward = torch.compile(net) if mode == "compile" else net
        x = torch.from_numpy(images[:, None])
        mean, std = config.data.mean, config.data.std

        def run(forward=forward, x=x, mean=mean, std=std):
            with torch.inference_mode():
                logits, _ = forward((x.float() / 255.0 - mean) / std)
                return torch.sigmoid(logits).numpy()

        run()
        first[f"torch {mode}"] = time.perf_counter() - t
        fns[f"torch {mode}"] = run

    from train_step import timed

    seconds = timed(fns, args.steps, args.warmup)
    for name, s in seconds.items():
        rows[name] = args.batch / s
    today = datetime.date.today().isoformat()
    lines = [
        "",
        f"### {today}: prediction on a CPU, bundle vs workdir vs PyTorch "
        f"(`benchmarks/bundle_cpu.py`); {where}",
        "",
        f"{args.variant} model, {args.classes} classes, {args.size} px, batch {args.batch}, "
        f"float32; median of {args.steps} timed batches after {args.warmup} untimed, the "
        "paths alternating batch by batch. First call: load + compile + the first batch.",
        "",
        "| path | images/s | first call s | vs bundle |",
        "|---|---|---|---|",
    ]
    for name in fns:
        lines.append(
            f"| {name} | {rows[name]:.2f} | {first[name]:.1f} | "
            f"{rows['bundle'] / rows[name]:.2f}x |"
        )
    lines += [
        "",
        f"Bundle file: {size_mb:.1f} MiB (variables as the function's argument), exported in "
        f"{export_s:.1f} s for cpu, cuda, tpu.",
    ]
    if baked:
        lines.append(
            f"Variables baked into the function instead: {baked['size_mb']:.1f} MiB of "
            f"serialised function (exported in {baked['export_s']:.1f} s), first call "
            f"{baked['first_s']:.1f} s (deserialise + compile + the first batch)."
        )
    table = "\n".join(lines) + "\n"
    shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    if args.output:
        with open(args.output, "a") as f:
            f.write(table)


if __name__ == "__main__":
    main()
