"""SIIM-ACR Pneumothorax: the run-length code, the layout as distributed, its masks in the
prepared records, and localisation scored against them."""

import os
import re

import numpy as np
import pytest
from raw_fixtures import write_siim_fixture

from chestattn_jax.data import siim_pneumothorax as siim
from chestattn_jax.data.raw import DataFormatError


def _hand_mask(height, width, pixels):
    mask = np.zeros((height, width), bool)
    for r, c in pixels:
        mask[r, c] = True
    return mask


def test_rle_is_relative_and_column_major():
    # 3 rows x 4 columns. Column-major: flat index f is row f % 3 of column f // 3.
    # "1 2 3 1": a run of 2 from pixel 1 (pixels 1, 2), then 3 past its end (pixel 6), 1.
    expected = _hand_mask(3, 4, [(1, 0), (2, 0), (0, 2)])
    np.testing.assert_array_equal(siim.decode_rle("1 2 3 1", 3, 4), expected)
    # The same runs read as absolute starts would put the second at pixel 3, (0, 1).
    assert not siim.decode_rle("1 2 3 1", 3, 4)[0, 1]
    # A run across a column's end continues at the top of the next column.
    np.testing.assert_array_equal(
        siim.decode_rle("2 3", 3, 4), _hand_mask(3, 4, [(2, 0), (0, 1), (1, 1)])
    )
    assert not siim.decode_rle(" -1 ", 3, 4).any()
    # Round trip on a random mask at the challenge's size.
    rng = np.random.default_rng(0)
    mask = rng.random((1024, 1024)) < 0.001
    mask[100:140, 500:530] = True
    np.testing.assert_array_equal(siim.decode_rle(siim.encode_rle(mask)), mask)
    assert siim.encode_rle(np.zeros((4, 4), bool)) == "-1"


def test_malformed_codes_name_the_image_and_line(tmp_path):
    cases = {
        "1 2 3": "3 numbers, not pairs",
        "1 2 x 4": "'x', not an integer",
        f"{1024 * 1024 - 2} 5": "past the last",
        "4 0": "length < 1",
    }
    for i, (code, problem) in enumerate(cases.items()):
        root = tmp_path / str(i)
        write_siim_fixture(root, [("img.a", "-1"), ("img.b", code)], images=[])
        with pytest.raises(DataFormatError) as e:
            siim.load(root)
        message = str(e.value)
        assert "line 3" in message and "'img.b'" in message and problem in message
        assert "\n" not in message
    # -1 beside a region of the same image contradicts it.
    write_siim_fixture(tmp_path / "both", [("img.a", "5 2"), ("img.a", "-1")], images=[])
    with pytest.raises(DataFormatError, match=r"'img.a'.*lines 2 and 3"):
        siim.load(tmp_path / "both")
    with pytest.raises(FileNotFoundError, match=re.escape("train-rle.csv")):
        siim.load(tmp_path / "nothing-here")


def test_layout_header_nested_tree_union_and_duplicates(tmp_path):
    """The header's leading space, DICOMs three folders down, several rows of an image as
    the union of their regions, an identical duplicate row read once, metadata from the
    DICOM header."""
    rows = [
        ("img.0", "-1"),
        ("img.1", "5 3"),
        ("img.1", "2000 4 10 2"),
        ("img.1", "5 3"),  # the first row again, word for word
        ("img.2", "1048000 10"),
        ("img.0", "-1"),
    ]
    fixture = write_siim_fixture(tmp_path, rows)
    header = (tmp_path / "train-rle.csv").read_text().splitlines()[0]
    assert header == "ImageId, EncodedPixels"
    examples = siim.load(tmp_path)
    assert [e.key for e in examples] == ["img.0", "img.1", "img.2"]
    by_key = {e.key: e for e in examples}
    for key, e in by_key.items():
        assert e.image_path == fixture["paths"][key]
        patient, sex, age, view = fixture["meta"][key]
        assert (e.patient_id, e.sex, e.age, e.view) == (patient, sex, age, view)
        assert e.source_split == "train" and e.mask.tolist() == [1]
    assert by_key["img.0"].labels.tolist() == [0] and not len(by_key["img.0"].mask_labels)
    assert by_key["img.1"].labels.tolist() == [1]
    union = siim.decode_rle("5 3") | siim.decode_rle("2000 4 10 2")
    masks = by_key["img.1"].truth_masks()
    assert masks.shape == (1, 1024, 1024)
    np.testing.assert_array_equal(masks[0], union)
    assert masks[0].sum() == 3 + 4 + 2
    np.testing.assert_array_equal(by_key["img.2"].truth_masks()[0], siim.decode_rle("1048000 10"))


def test_absent_images_follow_on_bad_image(tmp_path):
    from chestattn_jax.data import prepare

    raw = tmp_path / "raw"
    write_siim_fixture(raw, [("img.0", "-1"), ("img.1", "5 3"), ("gone", "-1")], ["img.0", "img.1"])
    examples = siim.load(raw)
    assert examples[2].image_path.endswith(os.path.join("dicom-images-train", "gone.dcm"))
    with pytest.raises(DataFormatError, match=re.escape("gone.dcm")):
        prepare.prepare("siim_pneumothorax", str(raw), str(tmp_path / "a"), 16)
    version = prepare.prepare(
        "siim_pneumothorax", str(raw), str(tmp_path / "b"), 16, on_bad_image="skip"
    )
    from chestattn_jax.data.records import read_report

    report = read_report(version)
    assert report["examples_written"] == 2 and "gone.dcm" in report["skipped"][0]["file"]


@pytest.fixture(scope="module")
def siim_export(tmp_path_factory):
    from chestattn_jax.data.export_siim import export_siim
    from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

    root = tmp_path_factory.mktemp("siim") / "raw"
    # More pneumothoraces than the phantoms' 6 %, so that every split has some.
    config = PhantomConfig(image_size=64, prevalence_scale=4.0)
    out = export_siim(str(root), 120, seed=1, config=config)
    # The phantoms' own pneumothorax masks, from the renderer.
    column = PHANTOM_CLASSES.index("Pneumothorax")
    out["masks"] = {k: render(1, i, config)["masks"][column] for k, i in out["positive"].items()}
    return out


def test_export_reads_back_into_its_own_truth(siim_export):
    """The export's code, read by the reader, is the phantom's mask in the 1024 frame; an
    image in both lungs has two rows."""
    from chestattn_jax.data.export_siim import frame_mask

    examples = {e.key: e for e in siim.load(siim_export["root"])}
    assert len(examples) == siim_export["num_images"]
    assert sum(e.labels[0] for e in examples.values()) == siim_export["num_positive"] > 10
    assert siim_export["num_rows"] > siim_export["num_images"]  # some images have two rows
    for key, truth in siim_export["masks"].items():
        np.testing.assert_array_equal(examples[key].truth_masks()[0], frame_mask(truth))
    views = {e.view for e in examples.values()}
    assert views <= {"PA", "AP"} and len(views) == 2
    assert len({e.patient_id for e in examples.values()}) == -(-len(examples) // 2)


def test_prepared_masks_are_the_letterboxed_truth_and_old_formats_are_refused(
    siim_export, tmp_path
):
    from PIL import Image

    from chestattn_jax.data import prepare, records
    from chestattn_jax.data.record_reader import open_split

    data_dir = tmp_path / "data"
    version = prepare.prepare("siim_pneumothorax", siim_export["root"], str(data_dir), 32)
    builder = records.open_builder("siim_pneumothorax", str(data_dir), 32)
    index = records.load_index(builder)
    positive = set(siim_export["masks"])
    np.testing.assert_array_equal(index["num_masks"], np.isin(index["key"], list(positive)))
    full = builder.as_data_source(records.SPLIT)
    for i in range(len(full)):
        rec = full[i]
        key = rec["key"].decode()
        if key not in positive:
            assert rec["truth_masks"].shape == (0, 32, 32)
            continue
        # The 64-px truth, through the 1024 frame, back onto the 64-px image and halved.
        truth = siim_export["masks"][key].astype(np.uint8) * 255
        half = np.asarray(Image.fromarray(truth).resize((32, 32), Image.Resampling.BILINEAR))
        assert rec["truth_mask_labels"].tolist() == [0]
        stored = rec["truth_masks"][0].astype(bool)
        assert (stored != (half >= 128)).mean() < 0.01  # only where bilinear ties round
        assert stored.sum() > 0
    config = _config(data_dir)
    test = open_split(config, "test")
    rows = test.truth_indices()
    assert len(rows) and all(test.truth(int(i))["masks"][0].any() for i in rows)
    # A folder of the earlier record format: one line saying to prepare again.
    old = os.path.join(os.path.dirname(version), "1.0.0")
    os.rename(version, old)
    from chestattn_jax.data.input_pipeline import create_source

    with pytest.raises(FileNotFoundError) as e:
        create_source(config, "train")
    message = str(e.value)
    assert "record format 1.0.0" in message and "prepare it again" in message
    assert "\n" not in message


def _config(data_dir, **train_overrides):
    from conftest import tiny_config

    from chestattn_jax import config as config_lib

    config = tiny_config(**train_overrides)
    config.data.name, config.data.data_dir = "siim_pneumothorax", str(data_dir)
    config.data.classes = ("Pneumothorax",)
    config.data.synthetic = config_lib.get_base_config().data.synthetic  # read by nothing
    return config


@pytest.mark.slow
def test_trains_and_scores_localisation_against_the_masks(siim_export, tmp_path):
    """export -> prepare -> train a few steps -> evaluate: the pointing game, IoU and both
    mIoUs against the pneumothorax masks, beside the class prior and uniform baselines."""
    from chestattn_jax import train
    from chestattn_jax.data import prepare
    from chestattn_jax.data.input_pipeline import create_source

    data_dir = tmp_path / "data"
    prepare.prepare("siim_pneumothorax", siim_export["root"], str(data_dir), 32)
    config = _config(data_dir, num_steps=4, log_every_steps=2, eval_every_steps=4)
    config.eval.evaluators = ("auc", "localization", "tables")
    config.eval.bootstrap_draws = 20
    metrics = train.train_and_evaluate(config, str(tmp_path / "w"))
    test = create_source(config, "test")
    positives = int(sum(test.truth(int(i))["labels"][0] for i in test.truth_indices()))
    loc = metrics["localization"]
    assert loc["overlap"]["count"] == {"Pneumothorax": positives} and positives > 0
    for scores in (loc, loc["baselines"]["class_prior"], loc["baselines"]["uniform"]):
        assert 0 <= scores["pointing_game_pixel"]["mean_hit_rate"] <= 1
        assert 0 <= scores["overlap"]["mean_miou_otsu"] <= 1
    validation = create_source(config, "validation")
    tuned = loc["overlap"]["tuned_threshold"]["Pneumothorax"]
    assert loc["miou"]["tuning_findings"] == len(validation.truth_indices()) > 0
    assert tuned in loc["miou"]["thresholds"]
    # The uniform map's region is the whole image at every threshold: mIoU = the share.
    uniform = loc["baselines"]["uniform"]["overlap"]
    assert uniform["mean_miou_otsu"] == pytest.approx(uniform["mean_miou_tuned"])
    assert uniform["mean_miou_otsu"] == pytest.approx(uniform["mean_iou"])
    rates = loc["bootstrap"]["rates"]["model"]["iou_otsu"]
    assert rates["mean_rate"] == pytest.approx(loc["overlap"]["mean_miou_otsu"])
    table = (tmp_path / "w" / "eval" / "per_class.md").read_text()
    assert "miou@otsu" in table and "miou@tuned" in table
