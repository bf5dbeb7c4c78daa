"""The grain pipelines and the augmentation."""

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import proc_stat

from chestattn_jax.data.input_pipeline import eval_batches, train_dataset
from chestattn_jax.data.synthetic import PhantomChestXray, PhantomConfig


def test_same_seed_same_batches_and_reshuffled_epochs():
    src = PhantomChestXray(size=12, config=PhantomConfig(image_size=16))

    def take(seed, n):
        it = iter(train_dataset(src, batch_size=4, seed=seed))
        return [next(it) for _ in range(n)]

    a, b, c = take(0, 6), take(0, 6), take(1, 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    assert set(a[0]) == {"image", "labels", "mask"} and a[0]["image"].shape == (4, 16, 16, 1)
    # Epoch 1 (batches 0-2) holds every example once; epoch 2 is another order.
    first = np.concatenate([x["image"] for x in a[:3]]).reshape(12, -1)
    second = np.concatenate([x["image"] for x in a[3:]]).reshape(12, -1)
    assert len({r.tobytes() for r in first}) == 12
    assert {r.tobytes() for r in first} == {r.tobytes() for r in second}
    assert not np.array_equal(first, second)


def test_eval_batches_pad_and_mask_the_last_batch():
    src = PhantomChestXray(size=10, config=PhantomConfig(image_size=16))
    batches = list(eval_batches(src, 4))
    assert len(batches) == 3
    assert [int(b["valid"].sum()) for b in batches] == [4, 4, 2]
    assert not batches[-1]["mask"][2:].any()
    images = np.concatenate([b["image"][b["valid"]] for b in batches])
    expected = np.stack([src[i]["image"] for i in range(10)])
    np.testing.assert_array_equal(images, expected)
    assert all(b["image"].shape[0] == 4 for b in itertools.islice(batches, 3))


def test_augmentation_is_small_seeded_and_never_flips_by_default():
    from chestattn_jax.data.augment import Augment

    image = np.zeros((64, 64, 1), np.uint8)
    image[20:44, 40:56] = 200  # a bright "heart" on the image's right
    ex = {"image": image, "labels": np.array([1])}
    aug = Augment()
    outs = [aug(ex, np.random.default_rng(s))["image"][..., 0].astype(float) for s in range(20)]
    for out in outs:
        assert out[:, 32:].mean() - out[:, :32].mean() > 30  # stays on the right
    assert not all(np.array_equal(outs[0], o) for o in outs[1:])
    np.testing.assert_array_equal(
        aug(ex, np.random.default_rng(5))["image"], aug(ex, np.random.default_rng(5))["image"]
    )
    identity = Augment(rotation_deg=0, scale=0, shift=0, contrast=0, brightness=0, gamma=0)
    np.testing.assert_array_equal(identity(ex, np.random.default_rng(0))["image"], image)
    flipped = Augment(
        rotation_deg=0, scale=0, shift=0, contrast=0, brightness=0, gamma=0, hflip=True
    )
    flips = [flipped(ex, np.random.default_rng(s))["image"] for s in range(10)]
    assert any(np.array_equal(f, image[:, ::-1]) for f in flips)
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        Augment(interpolation="cubic")


@pytest.mark.slow
def test_a_worker_ends_when_its_training_process_is_killed(tmp_path):
    """What grain's workers run first (exit_with_parent): a worker of a process killed
    with SIGKILL ends within seconds, instead of running on, orphaned."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing, time
            from chestattn_jax.data.input_pipeline import exit_with_parent

            def worker():
                exit_with_parent(0, 1)
                print("started", flush=True)
                time.sleep(120)

            if __name__ == "__main__":
                child = multiprocessing.get_context("spawn").Process(target=worker)
                child.start()
                print(child.pid, flush=True)
                time.sleep(120)
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "started"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        def running(pid):  # an exited child left unreaped by PID 1 is a zombie
            stat = proc_stat(pid)
            return stat is not None and stat[0] != "Z"

        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child), "the worker outlived its parent by 10 s"
    finally:
        parent.kill()
