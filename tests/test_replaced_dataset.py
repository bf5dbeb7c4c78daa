"""A prepared data set prepared again (``prepare --overwrite``) while a run reads it.

The run's sources take their rows and labels from the index of the build they were
opened on; they must go on reading that build's records, or stop with one clear
error, never read another build's images under the old labels.
"""

import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config
from raw_fixtures import write_nih_fixture

from chestattn_jax.data import prepare as prep
from chestattn_jax.data import records
from chestattn_jax.data.classes import NIH_CLASSES
from chestattn_jax.data.input_pipeline import create_source
from chestattn_jax.data.record_reader import DatasetReplacedError

SIZE = 32

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """NIH folders A (36 images) and B (40 other images: every row of A exists in B)."""
    root = tmp_path_factory.mktemp("raw")
    return write_nih_fixture(root / "A", num_images=36), write_nih_fixture(
        root / "B", num_images=40, seed=1
    )


def nih_config(data_dir):
    config = tiny_config("class")
    config.data.name = "nih"
    config.data.classes = tuple(NIH_CLASSES)
    config.data.data_dir = data_dir
    config.data.image_size = SIZE
    return config


def images_by_key(data_dir) -> dict:
    source = records.open_builder("nih", data_dir, SIZE).as_data_source(records.SPLIT)
    return {r["key"].decode(): r["image"] for r in (source[i] for i in range(len(source)))}


def test_an_open_source_reads_the_data_set_it_opened_to_the_end(raw, tmp_path, monkeypatch):
    # Four shards, as a real data set has many: array_record opens each at its first read.
    build = prep.ExampleWriter.download_and_prepare
    four = tfds.download.DownloadConfig(num_shards=4)
    monkeypatch.setattr(
        prep.ExampleWriter,
        "download_and_prepare",
        lambda self, **kwargs: build(self, download_config=four),
    )
    a, b = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    assert sum("array_record" in n for n in os.listdir(version)) == 4
    expected = images_by_key(data_dir)
    config = nih_config(data_dir)
    train = create_source(config, "train")
    train[0]  # read from one shard, as training had when prepare began
    validation = create_source(config, "validation")  # not read before its first validation
    prep.prepare("nih", b["root"], data_dir, SIZE, overwrite=True)
    assert images_by_key(data_dir).keys() != expected.keys()
    for source in (train, validation):
        for i in range(len(source)):
            key = source.example_ids[i]
            np.testing.assert_array_equal(source[i]["image"], expected[key], err_msg=key)


def test_a_source_opened_after_a_rebuild_stops_with_one_clear_error(raw, tmp_path):
    a, b = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    source = create_source(nih_config(data_dir), "test")
    # What a grain worker process gets: the source without its open records.
    worker = pickle.loads(pickle.dumps(source))
    aside = os.path.join(os.path.dirname(version), "replaced.0123abcd_1.0.0")

    # While --overwrite builds, the version folder is moved aside.
    os.rename(version, aside)
    with pytest.raises(DatasetReplacedError, match="is being prepared again") as e:
        worker[0]
    assert isinstance(e.value, OSError)  # one FATAL line in main.run
    os.rename(aside, version)  # a failed rebuild puts it back: the same data set
    np.testing.assert_array_equal(worker[0]["image"], source[0]["image"])

    worker = pickle.loads(pickle.dumps(source))
    prep.prepare("nih", b["root"], data_dir, SIZE, overwrite=True)
    for read in (lambda: worker[0], lambda: worker.truth(0)):
        with pytest.raises(DatasetReplacedError) as e:
            read()
        message = str(e.value)
        assert "\n" not in message
        assert f"{version} was prepared again" in message and "--overwrite" in message
        assert "--workdir" in message and "--data_dir" in message
    # Preparing again from the same images is a new build all the same.
    fresh = create_source(nih_config(data_dir), "test")
    worker = pickle.loads(pickle.dumps(fresh))
    prep.prepare("nih", b["root"], data_dir, SIZE, overwrite=True)
    with pytest.raises(DatasetReplacedError):
        worker[0]
    assert fresh[0]["image"].shape == (SIZE, SIZE, 1)  # opened before: still readable
