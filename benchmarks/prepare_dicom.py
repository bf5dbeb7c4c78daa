"""How fast prepare reads DICOM radiographs, and where the time goes.

Writes phantom DICOMs (1024 x 1024, 16 bits with 12 used, every other one MONOCHROME1,
every third one with a Window Center / Width so that the VOI LUT path runs) into a
temporary folder, then times, per image, in one process (one prepare worker):

- ``read``: ``pydicom.dcmread`` (parse the file, pixels not yet decoded);
- ``decode``: ``ds.pixel_array``;
- ``to_uint8``: modality LUT, VOI LUT or min-max window, MONOCHROME1 inversion
  (:func:`chestattn_jax.data.images._dicom_to_uint8`);
- ``resize``: the letterbox to ``--size`` (:func:`chestattn_jax.data.images.letterbox`);
- ``encode``: the record's image and fields as TFDS serialises them;

and, as a whole, ``load_grayscale`` + ``letterbox`` (what a prepare worker does per
image, the checks of ``load_dicom`` included) and the full ``prepare._encode``.

  python benchmarks/prepare_dicom.py                       # 60 images, 224 px
  python benchmarks/prepare_dicom.py --images 200 --size 224 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from chestattn_jax.data import images as images_lib
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.raw import RawExample
from chestattn_jax.data.synthetic import PhantomConfig, render

SIDE = 1024
TOP = 4095  # 12 bits of 16


def write_phantoms(folder: str, count: int, seed: int = 0) -> list[str]:
    """``count`` phantom DICOMs (module docstring) in ``folder``; their paths."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    config = PhantomConfig(image_size=256)
    paths = []
    for i in range(count):
        small = render(seed, i, config)["image"].astype(np.float64)
        # Up to 1024 px with a smooth ramp and noise, so that every pixel value differs.
        big = np.kron(small, np.ones((SIDE // 256, SIDE // 256))) * (TOP / 255.0)
        big += np.random.default_rng(i).normal(0, 8, big.shape)
        pixels = np.clip(np.round(big), 0, TOP).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
        ds.Modality = "DX"
        photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
        ds.set_pixel_data(TOP - pixels if i % 2 else pixels, photometric, 12)
        if i % 3 == 0:
            ds.WindowCenter, ds.WindowWidth = 2048, 3000
        path = os.path.join(folder, f"{i:05d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stage_times(paths: list[str], size: int) -> dict[str, float]:
    """Seconds per image of each stage (module docstring), the median over the images."""
    import pydicom
    import tensorflow_datasets as tfds

    # The image feature of the records (chestattn_jax.data.records): raw bytes.
    spec = tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding="bytes")
    times: dict[str, list[float]] = {s: [] for s in ("read", "decode", "to_uint8", "resize")}
    times["encode"] = []
    for path in paths:
        t0 = time.perf_counter()
        ds = pydicom.dcmread(path)
        t1 = time.perf_counter()
        a = ds.pixel_array
        t2 = time.perf_counter()
        u8 = images_lib._dicom_to_uint8(path, ds, a)
        t3 = time.perf_counter()
        small = images_lib.letterbox(u8, size)
        t4 = time.perf_counter()
        spec.encode_example(small[..., None])
        t5 = time.perf_counter()
        for name, (a_, b_) in zip(
            ("read", "decode", "to_uint8", "resize", "encode"),
            ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)),
            strict=True,
        ):
            times[name].append(b_ - a_)
    return {name: statistics.median(v) for name, v in times.items()}


def whole(paths: list[str], size: int) -> dict[str, float]:
    """Images per second (wall clock and CPU time) of load_grayscale + letterbox, and of
    prepare's per-image ``_encode``."""
    c0, t0 = time.process_time(), time.perf_counter()
    for path in paths:
        images_lib.letterbox(images_lib.load_grayscale(path), size)
    c1, t1 = time.process_time(), time.perf_counter()
    empty = np.zeros(0, np.int32)
    for path in paths:
        ex = RawExample(
            key=path,
            image_path=path,
            patient_id="p",
            labels=empty,
            mask=empty,
            view="PA",
            sex="",
            age=-1,
            source_split="",
            boxes=np.zeros((1, 4), np.float32) + 10,
            box_labels=np.zeros(1, np.int32),
        )
        _, error = prep._encode((ex, size, None))
        assert error is None, error
    c2, t2 = time.process_time(), time.perf_counter()
    return {
        "load_and_letterbox_images_per_s": len(paths) / (t1 - t0),
        "prepare_encode_images_per_s": len(paths) / (t2 - t1),
        # Per second of this process's CPU time: what one worker does on an idle core,
        # less sensitive to the other jobs of a shared machine than the wall clock.
        "load_and_letterbox_images_per_cpu_s": len(paths) / (c1 - c0),
        "prepare_encode_images_per_cpu_s": len(paths) / (c2 - c1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_phantoms(folder, args.images)
        mb = sum(os.path.getsize(p) for p in paths) / len(paths) / 2**20
        whole(paths[:5], args.size)  # warm up imports and caches
        runs = []
        for _ in range(args.repeats):
            runs.append({**whole(paths, args.size), **stage_times(paths, args.size)})
    stages = ("read", "decode", "to_uint8", "resize", "encode")
    best = {k: max(r[k] for r in runs) for k in runs[0] if "_per_" in k}
    best.update({k: min(r[k] for r in runs) * 1e3 for k in stages})
    total = sum(best[k] for k in stages)
    print(
        json.dumps(
            {
                "images": args.images,
                "size": args.size,
                "mb_per_file": round(mb, 2),
                "load_average": os.getloadavg(),
                "best_of_repeats": {k: round(v, 2) for k, v in best.items()},
                "ms_per_stage_share": {k: round(best[k] / total, 3) for k in stages},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
