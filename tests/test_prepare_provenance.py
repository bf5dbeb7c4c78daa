"""What a prepared data set was prepared from: reuse, refusal, --overwrite, the fingerprint."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import proc_stat, tiny_config
from raw_fixtures import write_nih_fixture

from chestattn_jax.data import nih, records
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.classes import NIH_CLASSES
from chestattn_jax.data.input_pipeline import create_source, dataset_fingerprint
from chestattn_jax.data.raw import DataFormatError

SIZE = 32

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Two different NIH folders, A (36 images) and B (33 images, other labels)."""
    root = tmp_path_factory.mktemp("raw")
    a = write_nih_fixture(root / "A", num_images=36, seed=0)
    b = write_nih_fixture(root / "B", num_images=33, seed=1)
    return a, b


def keys(data_dir) -> list[str]:
    return sorted(records.load_index(records.open_builder("nih", data_dir, SIZE))["key"].tolist())


def report(version_dir) -> dict:
    with open(os.path.join(version_dir, records.REPORT_FILE)) as f:
        return json.load(f)


def aside(version_dir) -> list[str]:
    parent = os.path.dirname(version_dir)
    return [n for n in os.listdir(parent) if n.startswith(prep.ASIDE_PREFIX)]


def nih_config(data_dir):
    config = tiny_config("class")
    config.data.name = "nih"
    config.data.classes = tuple(NIH_CLASSES)
    config.data.data_dir = data_dir
    config.data.image_size = SIZE
    return config


def num_records(data_dir) -> int:
    """Records in the train, validation and test sources that training would open."""
    config = nih_config(data_dir)
    return sum(len(create_source(config, s)) for s in ("train", "validation", "test"))


def test_same_inputs_reuse_other_inputs_refuse_overwrite_rebuilds(raw, tmp_path):
    a, b = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    record = report(version)
    assert record["raw_dir"] == a["root"]
    assert record["options"] == {"on_bad_image": "error", "nih_views": ["AP", "PA"]}
    assert record["examples_read"] == record["examples_written"] == a["num_images"]
    assert record["fingerprint"].startswith("sha256:") and len(record["fingerprint"]) == 71
    a_keys = keys(data_dir)

    # A marker in the version folder and a leftover of a concurrent or killed run:
    # a prepare that reuses the data set touches neither.
    marker = os.path.join(version, "marker")
    open(marker, "w").close()
    leftover = os.path.join(os.path.dirname(version), "incomplete.XYZ123_1.0.0")
    os.makedirs(leftover)

    assert prep.prepare_with_status(
        "nih",
        a["root"],
        data_dir,
        SIZE,
        on_bad_image="skip",  # with every image readable, the same data set
        nih_views=("AP", "PA"),  # another order, the same views
    ) == (version, "reused")
    assert os.path.exists(marker) and os.path.exists(leftover)

    # Other inputs: refused, naming what differs and how to proceed; nothing changes.
    with pytest.raises(prep.DatasetConflictError) as e:
        prep.prepare("nih", b["root"], data_dir, SIZE)
    message = str(e.value)
    assert f"raw folder: {a['root']} -> {b['root']}" in message
    assert f"examples read: {a['num_images']} -> {b['num_images']}" in message
    assert "fingerprint" in message and record["fingerprint"] in message
    assert "--overwrite" in message and "--data_dir" in message
    # Other options: refused, naming the option.
    with pytest.raises(prep.DatasetConflictError, match=r"option nih_views: \['AP', 'PA'\] -> "):
        prep.prepare("nih", a["root"], data_dir, SIZE, nih_views=("PA",))
    assert keys(data_dir) == a_keys and report(version) == record
    assert os.path.exists(marker) and os.path.exists(leftover)
    assert num_records(data_dir) == a["num_images"]  # and cached in this process

    # --overwrite rebuilds from B; the old folder and the stale leftover are gone.
    assert prep.prepare("nih", b["root"], data_dir, SIZE, overwrite=True) == version
    assert keys(data_dir) == sorted(e["image_index"] for e in b["entries"])
    assert report(version)["raw_dir"] == b["root"]
    assert report(version)["examples_written"] == b["num_images"]
    assert not os.path.exists(marker) and not os.path.exists(leftover)
    assert aside(version) == []
    # The training-side cache of the index sees the rebuilt data set, not the old one.
    assert num_records(data_dir) == b["num_images"]
    fingerprint = dataset_fingerprint(nih_config(data_dir))
    assert fingerprint["fingerprint"] == report(version)["fingerprint"]
    assert fingerprint["num_records"] == b["num_images"]
    assert fingerprint["raw_dir"] == b["root"]


def test_a_failed_overwrite_puts_the_old_data_set_back(raw, tmp_path):
    a, b = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    record, a_keys = report(version), keys(data_dir)
    broken = tmp_path / "B_broken"
    shutil.copytree(b["root"], broken)
    bad = sorted(b["labels"])[2]
    with open(broken / "images" / bad, "r+b") as f:
        f.truncate(60)
    with pytest.raises(DataFormatError, match=bad):
        prep.prepare("nih", str(broken), data_dir, SIZE, overwrite=True)
    assert report(version) == record and keys(data_dir) == a_keys
    assert aside(version) == []


def test_a_killed_overwrite_is_put_back_at_the_next_prepare(raw, tmp_path):
    a, _ = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    record = report(version)
    # What a --overwrite killed while it builds leaves: the old folder moved aside.
    os.rename(
        version, os.path.join(os.path.dirname(version), f"replaced.0123abcd_{records.VERSION}")
    )
    assert prep.prepare_with_status("nih", a["root"], data_dir, SIZE) == (version, "reused")
    assert report(version) == record and aside(version) == []
    # --overwrite rebuilds even a matching data set (e.g. one whose shards were damaged).
    marker = os.path.join(version, "marker")
    open(marker, "w").close()
    status = prep.prepare_with_status("nih", a["root"], data_dir, SIZE, overwrite=True)
    assert status == (version, "rebuilt") and not os.path.exists(marker)
    # The same record, but a build of its own: a run that read the old one can tell.
    rebuilt = report(version)
    assert rebuilt.pop("build_id") != record.pop("build_id")
    assert rebuilt == record and aside(version) == []


def test_a_data_set_without_a_record_is_refused_unless_overwrite(raw, tmp_path):
    a, _ = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    # A record without the fingerprint (counts and skipped files only).
    with open(os.path.join(version, records.REPORT_FILE), "w") as f:
        json.dump({"examples_read": 36, "examples_written": 36, "skipped": []}, f)
    with pytest.raises(prep.DatasetConflictError, match="cannot tell whether it matches"):
        prep.prepare("nih", a["root"], data_dir, SIZE)
    with pytest.raises(DataFormatError) as raised:  # nor read as a data set of unknown origin
        dataset_fingerprint(nih_config(data_dir))
    assert str(raised.value) == (
        f"{os.path.join(version, records.REPORT_FILE)} has no field fingerprint: this data set "
        "was not prepared by this version of chestattn_jax. Prepare it again with --overwrite."
    )
    prep.prepare("nih", a["root"], data_dir, SIZE, overwrite=True)
    assert report(version)["raw_dir"] == a["root"]
    assert dataset_fingerprint(nih_config(data_dir))["fingerprint"].startswith("sha256:")


def test_a_version_folder_without_a_data_set_is_not_reused(raw, tmp_path):
    a, _ = raw
    data_dir = str(tmp_path / "P")
    version = records.version_dir("nih", data_dir, SIZE)
    os.makedirs(version)  # e.g. made by hand, or a copy that lost its files
    with pytest.raises(prep.DatasetConflictError, match="holds no complete data set"):
        prep.prepare("nih", a["root"], data_dir, SIZE)
    assert os.listdir(version) == []
    assert prep.prepare_with_status("nih", a["root"], data_dir, SIZE, overwrite=True) == (
        version,
        "rebuilt",
    )
    assert keys(data_dir) == sorted(e["image_index"] for e in a["entries"])


def test_a_damaged_index_is_read_again_from_the_records(raw, tmp_path):
    a, _ = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    expected = keys(data_dir)
    index = os.path.join(version, records.INDEX_FILE)
    with open(index, "r+b") as f:
        f.truncate(100)
    assert keys(data_dir) == expected
    assert sorted(np.load(index)["key"].tolist()) == expected  # and written again
    # An index without an array this version writes is a damaged cache too.
    arrays = dict(np.load(index))
    del arrays["num_boxes"]
    np.savez(index, **arrays)
    assert keys(data_dir) == expected
    assert "num_boxes" in np.load(index)


def test_inputs_fingerprint_follows_the_examples_not_the_folder(raw, tmp_path):
    a, _ = raw
    examples = nih.load(a["root"])
    base = prep.inputs_fingerprint(examples, a["root"])
    assert prep.inputs_fingerprint(examples, a["root"]) == base
    # A copy of the folder elsewhere: the same fingerprint.
    copy = shutil.copytree(a["root"], tmp_path / "copy")
    assert prep.inputs_fingerprint(nih.load(copy), str(copy)) == base
    # One label, one age, one image file's size, the order: each changes it.
    first = examples[0]
    labels = first.labels.copy()
    labels[0] = 1 - labels[0]
    for changed in (
        [dataclasses.replace(first, labels=labels), *examples[1:]],
        [dataclasses.replace(first, age=first.age + 1), *examples[1:]],
        [examples[1], examples[0], *examples[2:]],
    ):
        assert prep.inputs_fingerprint(changed, a["root"]) != base
    with open(copy / "images" / first.key, "ab") as f:
        f.write(b"\0")
    assert prep.inputs_fingerprint(nih.load(copy), str(copy)) != base


def test_synthetic_fingerprint_is_of_the_phantom_settings():
    config = tiny_config("class")
    fp = dataset_fingerprint(config)
    assert fp == dataset_fingerprint(tiny_config("class"))
    assert fp["name"] == "synthetic" and fp["image_size"] == 32 and fp["raw_dir"] is None
    assert fp["num_records"] == 256 + 40 + 72
    assert fp["fingerprint"].startswith("sha256:")
    for change in (
        lambda c: setattr(c.data.synthetic, "noise", 0.5),
        lambda c: setattr(c.data.synthetic, "seed", 1),
        lambda c: setattr(c.data, "image_size", 48),
        lambda c: setattr(c.data, "classes", ("Effusion", "Mass")),
    ):
        other = tiny_config("class")
        change(other)
        assert dataset_fingerprint(other)["fingerprint"] != fp["fingerprint"]


def test_prepared_fingerprint_of_nothing_prepared(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m chestattn_jax\.data\.prepare"):
        dataset_fingerprint(nih_config(str(tmp_path)))


PREPARE = "chestattn_jax.data.prepare"


@pytest.mark.slow
def test_cli_says_what_it_did_and_exits_non_zero_when_it_cannot(raw, tmp_path, cli):
    def run_prepare(*args):
        return cli("--num_workers=0", *args, module=PREPARE, timeout=120)

    a, b = raw
    data_dir = str(tmp_path / "P")
    version = prep.prepare("nih", a["root"], data_dir, SIZE)
    common = ["--dataset=nih", f"--data_dir={data_dir}", f"--image_size={SIZE}"]
    same = run_prepare(*common, f"--raw_dir={a['root']}")
    assert same.returncode == 0, same.stderr
    assert f"Nothing rebuilt: {version} already holds this data set" in same.stdout
    other = run_prepare(*common, f"--raw_dir={b['root']}")
    assert other.returncode != 0
    assert f"raw folder: {a['root']} -> {b['root']}" in other.stderr
    assert "Nothing was written" in other.stderr and "Prepared" not in other.stdout
    # An option the NIH layout does not have is an error, not ignored.
    ignored = run_prepare(*common, f"--raw_dir={a['root']}", "--nofrontal_only")
    assert ignored.returncode != 0
    assert "--[no]frontal_only applies to --dataset=chexpert only" in ignored.stderr
    assert keys(data_dir) == sorted(e["image_index"] for e in a["entries"])
    for name in (records.REPORT_FILE, records.INDEX_FILE, "dataset_info.json"):
        assert os.path.exists(os.path.join(version, name))


@pytest.mark.slow
def test_a_worker_that_dies_stops_prepare_with_one_message(tmp_path, cli):
    """A decoding worker killed from outside (as the out-of-memory killer does) stops
    prepare with a FATAL line and nothing written, where it used to wait forever."""
    truth = write_nih_fixture(tmp_path / "raw", num_images=32)
    # One "image" is a named pipe: the worker that opens it blocks there, so it is
    # surely alive, and busy, when it is killed.
    blocked = tmp_path / "raw" / "images" / sorted(os.listdir(truth["images_dir"]))[0]
    blocked.unlink()
    os.mkfifo(blocked)
    data_dir = tmp_path / "P"
    proc = cli.start(
        "--num_workers=1", "--dataset=nih", f"--raw_dir={tmp_path / 'raw'}",
        f"--data_dir={data_dir}", f"--image_size={SIZE}",
        module=PREPARE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        worker = _wait_for_worker(proc.pid)
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    fatal = [line for line in err.splitlines() if line.startswith("FATAL:")]
    assert len(fatal) == 1 and "A prepare worker process died" in fatal[0], err[-3000:]
    assert not list(data_dir.rglob("*.array_record*"))


def _wait_for_worker(parent: int, timeout: float = 60) -> int:
    """The pid of ``parent``'s multiprocessing worker (not its resource tracker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            stat = proc_stat(entry)
            if stat is None or int(stat[1]) != parent:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        return int(entry)
            except OSError:  # gone meanwhile
                continue
        time.sleep(0.1)
    raise TimeoutError(f"no worker process of {parent} after {timeout} s")
