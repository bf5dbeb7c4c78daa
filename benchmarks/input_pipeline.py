"""Images/s of the training input pipeline from prepared TFDS ArrayRecord records.

Writes phantom radiographs (512 px PNGs) as NIH-style image files,
prepares them at each size, then times the whole training pipeline (shuffle,
PNG decode, augmentation, batching; grain ``mp_prefetch`` for workers > 0) for
0, 1 and N worker processes. The goal is at least 700 images/s per worker at 224 px.

  python benchmarks/input_pipeline.py --sizes=224,320 --workers=0,1,2 --images=2048
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["224", "320"], "Stored image sizes to prepare and read.")
flags.DEFINE_list("workers", ["0", "1", str(os.cpu_count() or 1)], "grain worker counts.")
flags.DEFINE_integer(
    "images",
    2048,
    "Distinct images in the prepared data set (grain's index shuffle is slow on very small ones).",
)
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_float("seconds", 8.0, "Timed seconds per setting (after a warm-up).")


def make_examples(root: str, n: int):
    from chestattn_jax.data.classes import NIH_CLASSES
    from chestattn_jax.data.raw import NO_BOX_LABELS, NO_BOXES, RawExample
    from chestattn_jax.data.synthetic import PhantomChestXray, PhantomConfig

    phantoms = PhantomChestXray(size=n, config=PhantomConfig(image_size=512))
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    examples = []
    for i in range(n):
        path = os.path.join(root, "images", f"{i:08d}_000.png")
        Image.fromarray(phantoms[i]["image"][..., 0]).save(path)
        labels = np.zeros(len(NIH_CLASSES), np.int32)
        labels[i % len(NIH_CLASSES)] = 1
        examples.append(
            RawExample(
                key=os.path.basename(path),
                image_path=path,
                patient_id=str(i // 3),
                labels=labels,
                mask=np.ones_like(labels),
                view="PA",
                sex="M",
                age=50,
                source_split="train_val",
                boxes=NO_BOXES,
                box_labels=NO_BOX_LABELS,
            )
        )
    return examples


def measure(source, workers: int, batch_size: int, seconds: float) -> float:
    from chestattn_jax.data.augment import Augment
    from chestattn_jax.data.input_pipeline import train_dataset

    it = iter(
        train_dataset(source, batch_size=batch_size, seed=0, num_workers=workers, augment=Augment())
    )
    for _ in range(3 + 2 * workers):  # warm-up: worker start and the first batches
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        n += batch["image"].shape[0]
    rate = n / (time.perf_counter() - start)
    if hasattr(it, "close"):
        it.close()
    return rate


def main(argv):
    del argv
    from chestattn_jax.config import get_base_config
    from chestattn_jax.data import prepare as prep
    from chestattn_jax.data.record_reader import open_split

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        examples = make_examples(os.path.join(tmp, "raw"), FLAGS.images)
        for size in map(int, FLAGS.sizes):
            data_dir = os.path.join(tmp, "prepared")
            t = time.perf_counter()
            prep.prepare("nih", "", data_dir, size, examples=examples, num_workers=0)
            prep_rate = len(examples) / (time.perf_counter() - t)
            config = get_base_config()
            config.data.data_dir, config.data.image_size = data_dir, size
            source = open_split(config, "train")
            for w in map(int, FLAGS.workers):
                rate = measure(source, w, FLAGS.batch_size, FLAGS.seconds)
                rows.append((size, w, rate, rate / max(w, 1), prep_rate))
                print(f"{size} px, {w} workers: {rate:.0f} images/s", flush=True)
    print(f"\nMachine: {os.cpu_count()} CPUs; batch {FLAGS.batch_size}; augmentation on.")
    print("| size | workers | images/s | images/s per worker | prepare images/s (1 process) |")
    print("|---|---|---|---|---|")
    for size, w, rate, per, prep_rate in rows:
        print(f"| {size} | {w} | {rate:.0f} | {per:.0f} | {prep_rate:.0f} |")


if __name__ == "__main__":
    app.run(main)
