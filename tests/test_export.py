"""Phantoms exported in the raw layouts parse with the real readers into the same truth."""

import os

import numpy as np
import pytest

from chestattn_jax.data import chexpert, export, nih
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.export import (
    CHEXPERT_FROM_NIH,
    export_chexpert,
    export_files,
    export_nih,
)
from chestattn_jax.data.synthetic import PhantomConfig, render

CONFIG = PhantomConfig(image_size=48, prevalence_scale=2.0)


@pytest.fixture(scope="module")
def nih_export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("nih_phantom"))
    return export_nih(root, 30, seed=1, config=CONFIG), root


def test_nih_layout_parses_into_the_phantom_labels_and_boxes(nih_export):
    info, root = nih_export
    examples = nih.load(root, NIH_CLASSES, views=None)
    assert len(examples) == info["num_images"] == 30
    by_key = {e.key: e for e in examples}
    n_boxes = 0
    for index in range(30):
        patient, follow_up = divmod(index, 3)
        ex = by_key[f"{patient + 1:08d}_{follow_up:03d}.png"]
        truth = render(1, index, CONFIG)
        np.testing.assert_array_equal(ex.labels, truth["labels"])
        assert ex.patient_id == str(patient + 1)
        for box, label in zip(ex.boxes, ex.box_labels, strict=True):
            # The box list is in NIH's 1024-px frame.
            np.testing.assert_allclose(box * 48 / 1024, truth["boxes"][label], atol=1e-4)
            n_boxes += 1
    assert n_boxes == info["num_boxes"]
    test = {e.patient_id for e in examples if e.source_split == "test"}
    train_val = {e.patient_id for e in examples if e.source_split == "train_val"}
    assert test and train_val and not test & train_val


def test_nih_phantom_prepares_end_to_end(nih_export, tmp_path):
    from chestattn_jax.data import prepare as prep
    from chestattn_jax.data import records

    info, root = nih_export
    version_dir = prep.prepare("nih", root, str(tmp_path), 32)
    index = records.load_index(records.open_builder("nih", str(tmp_path), 32))
    assert len(index["key"]) == info["num_images"]
    assert version_dir.endswith(records.VERSION)


def test_chexpert_layout_maps_findings_to_observations(tmp_path):
    info = export_chexpert(str(tmp_path), 24, seed=2, config=CONFIG, uncertain_fraction=0.0)
    examples = chexpert.load(str(tmp_path), CHEXPERT_CLASSES, uncertainty="ignore")
    assert len(examples) == 24
    assert sum(e.source_split == "valid" for e in examples) == info["num_valid"]
    for e in examples:
        patient = int(e.patient_id.removeprefix("patient")) - 1
        study = int(e.key.split("/study")[1].split("/")[0]) - 1
        truth = render(2, patient * 3 + study, CONFIG)
        present = {c for c, y in zip(NIH_CLASSES, truth["labels"], strict=True) if y}
        expected = [int(bool(present & set(CHEXPERT_FROM_NIH[o]))) for o in CHEXPERT_CLASSES]
        np.testing.assert_array_equal(e.labels, expected)
        assert e.mask.all()


def test_chexpert_uncertain_labels_are_written_as_minus_one(tmp_path):
    export_chexpert(str(tmp_path), 30, seed=3, config=CONFIG, uncertain_fraction=0.5)
    examples = chexpert.load(str(tmp_path), CHEXPERT_CLASSES, uncertainty="ignore")
    train = [e for e in examples if e.source_split == "train"]
    assert any((e.mask == 0).any() for e in train)
    assert all(e.mask.all() for e in examples if e.source_split == "valid")


def tree(root) -> dict:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
        for d, _, names in os.walk(root)
        for n in names
    }


def run_export(cli, *flags):
    return cli("--image_size=32", *flags, module="chestattn_jax.data.export", timeout=120)


@pytest.mark.slow
def test_a_non_empty_out_dir_is_refused_and_overwrite_leaves_exactly_the_new_export(tmp_path, cli):
    out = str(tmp_path / "raw")
    small = PhantomConfig(image_size=32)
    export_nih(out, 20, config=small)
    before = tree(out)

    # Into an earlier export, of either layout: refused, one FATAL line, nothing written.
    refused = run_export(cli, "--layout=nih", f"--out_dir={out}", "--num_images=10")
    fatal = [line for line in refused.stderr.splitlines() if line.startswith("FATAL:")]
    assert refused.returncode != 0 and len(fatal) == 1, refused.stderr
    assert f"--out_dir={out} is not empty" in fatal[0] and "--overwrite" in fatal[0]
    with pytest.raises(FileExistsError, match="Nothing was written"):
        export_chexpert(out, 12, config=small)
    assert tree(out) == before

    # --overwrite: the earlier export's files go, and only the new export is there.
    export_nih(out, 10, config=small, overwrite=True)
    assert sorted(tree(out)) == sorted(export_files("nih", 10))
    assert len(nih.load(out, NIH_CLASSES, views=None)) == 10
    export_chexpert(out, 12, config=small, overwrite=True)
    assert sorted(tree(out)) == sorted(export_files("chexpert", 12))
    assert len(chexpert.load(out, CHEXPERT_CLASSES, uncertainty="ignore")) == 12
    assert not os.path.exists(os.path.join(out, "images"))

    # An export killed half-way is replaced too (it listed its files before writing them).
    os.remove(os.path.join(out, export_files("chexpert", 12)[3]))
    done = run_export(cli, "--layout=nih", f"--out_dir={out}", "--num_images=6", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sorted(tree(out)) == sorted(export_files("nih", 6))

    # A file no export wrote, or a folder without an export's record: --overwrite
    # refuses, and removes nothing.
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    own = str(tmp_path / "own")
    os.makedirs(os.path.join(own, "images"))
    with open(os.path.join(own, "images", "00000001_000.png"), "wb") as f:
        f.write(b"a real image")
    for folder, named in ((out, "notes.txt"), (own, export.EXPORT_FILE)):
        before = tree(folder)
        with pytest.raises(FileExistsError, match="removed") as e:
            export_nih(folder, 3, config=small, overwrite=True)
        assert named in str(e.value) and "\n" not in str(e.value)
        assert tree(folder) == before
