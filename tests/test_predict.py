"""--mode=predict on PNG, JPEG and DICOM files, and the DICOM reader itself."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config
from PIL import Image
from raw_fixtures import write_dicom

from chestattn_jax import predict as predict_lib
from chestattn_jax import sharding as shd
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.data.images import letterbox, load_grayscale
from chestattn_jax.data.input_pipeline import normalize_images
from chestattn_jax.data.raw import DataFormatError
from chestattn_jax.models import create_model
from chestattn_jax.train_state import create_optimizer, create_train_state

REAL = REPO.parent / "shared" / "data" / "real"


# ------------------------------------------------------------------ DICOM reading


def test_dicom_8bit_monochrome2_is_taken_as_is(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)
    write_dicom(tmp_path / "a.dcm", a)
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_grayscale(str(tmp_path / "a.dcm")), a)
    np.testing.assert_array_equal(load_grayscale(str(tmp_path / "a.png")), a)


def test_dicom_monochrome1_is_inverted(tmp_path):
    a = np.random.default_rng(1).integers(0, 4096, (40, 30), dtype=np.uint16)
    write_dicom(tmp_path / "m2.dcm", a, "MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", a, "MONOCHROME1")
    m2 = load_grayscale(str(tmp_path / "m2.dcm")).astype(int)
    m1 = load_grayscale(str(tmp_path / "m1.dcm")).astype(int)
    assert m2.min() == 0 and m2.max() == 255  # 12 bits in 16, windowed to min-max
    np.testing.assert_array_equal(m1, 255 - m2)
    # No extension: recognised by the DICM preamble.
    os.rename(tmp_path / "m1.dcm", tmp_path / "m1")
    np.testing.assert_array_equal(load_grayscale(str(tmp_path / "m1")), m1)


def test_dicom_rescale_then_window(tmp_path):
    # Stored values 0..999; modality value = 2 * stored - 100; window [300, 700] there.
    a = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    write_dicom(tmp_path / "w.dcm", a, rescale=(2.0, -100.0), window=(500.0, 401.0))
    out = load_grayscale(str(tmp_path / "w.dcm")).reshape(-1)
    modality = 2.0 * np.arange(1000) - 100.0
    assert np.all(out[modality <= 300] == 0) and np.all(out[modality >= 700] == 255)
    mid = (modality > 310) & (modality < 690)
    expected = np.round(np.clip((modality - 499.5) / 400 + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(out[mid], expected[mid])
    # Without the rescale, the same window would cut elsewhere: the rescale matters.
    write_dicom(tmp_path / "n.dcm", a, window=(500.0, 401.0))
    assert not np.array_equal(load_grayscale(str(tmp_path / "n.dcm")).reshape(-1), out)


def test_dicom_sigmoid_window(tmp_path):
    """VOI LUT Function SIGMOID (PS3.3 C.11.2.1.3.1): 1 / (1 + exp(-4 (x - c) / w))."""
    a = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    write_dicom(tmp_path / "s.dcm", a, window=(500.0, 200.0), voi_function="SIGMOID")
    out = load_grayscale(str(tmp_path / "s.dcm")).reshape(-1).astype(int)
    expected = np.round(255 / (1 + np.exp(-4 * (np.arange(1000) - 500.0) / 200.0)))
    np.testing.assert_allclose(out, expected, atol=1)
    # Not the linear window of the same centre and width, which clips at 400 and 600.
    write_dicom(tmp_path / "l.dcm", a, window=(500.0, 200.0))
    linear = load_grayscale(str(tmp_path / "l.dcm")).reshape(-1).astype(int)
    assert linear[350] == 0 and out[350] > 0 and np.abs(linear - out).max() > 20


def test_dicom_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
    """A VOI LUT Sequence maps modality values through its table (PS3.3 C.11.2.1.1):
    below the first mapped value to the first entry, above the table to the last."""
    table = np.round(255 * np.sqrt(np.arange(256) / 255)).astype(int)  # a gamma curve
    a = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    # The window (a different mapping) is there too; the LUT is what applies.
    write_dicom(
        tmp_path / "v.dcm", a, rescale=(1.0, -100.0), window=(0.0, 50.0), voi_lut=(200, 8, table)
    )
    out = load_grayscale(str(tmp_path / "v.dcm")).reshape(-1)
    modality = np.arange(1000) - 100  # the table starts at modality value 200
    np.testing.assert_array_equal(out, table[np.clip(modality - 200, 0, 255)])
    # The same file as MONOCHROME1 is its inverse.
    write_dicom(
        tmp_path / "m1.dcm", a, "MONOCHROME1", rescale=(1.0, -100.0), voi_lut=(200, 8, table)
    )
    np.testing.assert_array_equal(load_grayscale(str(tmp_path / "m1.dcm")).reshape(-1), 255 - out)


def test_dicom_without_the_part_10_preamble(tmp_path):
    """Older archives hold bare data sets: no preamble, no 'DICM', no file meta."""
    import pydicom

    a = np.random.default_rng(2).integers(0, 4096, (30, 20), dtype=np.uint16)
    write_dicom(tmp_path / "p10.dcm", a, window=(2000.0, 3000.0))
    ds = pydicom.dcmread(tmp_path / "p10.dcm")
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "bare.dcm", implicit_vr=True, little_endian=True)
    assert (tmp_path / "bare.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(
        load_grayscale(str(tmp_path / "bare.dcm")), load_grayscale(str(tmp_path / "p10.dcm"))
    )


def test_dicom_without_pixels_and_garbage(tmp_path):
    write_dicom(tmp_path / "empty.dcm", np.zeros((8, 8), np.uint16), with_pixels=False)
    with pytest.raises(DataFormatError, match=r"empty\.dcm has no pixel data"):
        load_grayscale(str(tmp_path / "empty.dcm"))
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom at all")
    with pytest.raises(DataFormatError, match=r"junk\.dcm"):
        load_grayscale(str(tmp_path / "junk.dcm"))


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is not present")
def test_real_dicom_reads():
    a = load_grayscale(str(REAL / "siim_pneumothorax_example.dcm"))
    assert a.shape == (1024, 1024) and a.dtype == np.uint8 and a.std() > 10


# ------------------------------------------------------------------------ predict


def make_workdir(root, variant="class", classes=None, with_config_json=True):
    """A workdir with one real Orbax checkpoint of a freshly initialised tiny model."""
    config = tiny_config(variant)
    if classes is not None:
        config.data.classes = classes
    workdir = str(root)
    mesh = shd.make_mesh()
    state = create_train_state(
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(3),
        (config.data.image_size, config.data.image_size, 1),
        shd.replicated(mesh),
    )
    checkpointer = Checkpointer(workdir)
    checkpointer.save(0, state, None, {"best_step": 0}, val_loss=1.0)
    checkpointer.close()
    if with_config_json:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())
    return config, workdir, state


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One file of every supported kind, plus three that cannot be read."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    Image.fromarray(gray).save(d / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "gray16.png")
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 200)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(np.dstack([gray] * 3)).save(d / "rgb.jpg", quality=95)
    write_dicom(d / "mono1.dcm", (gray.astype(np.uint16) * 16), "MONOCHROME1", rescale=(1.0, -5.0))
    write_dicom(d / "nopixels.dcm", np.zeros((8, 8), np.uint16), with_pixels=False)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    good = [str(d / n) for n in ("gray8.png", "gray16.png", "rgba.png", "rgb.jpg", "mono1.dcm")]
    bad = [str(d / "nopixels.dcm"), str(d / "broken.png"), str(d / "missing.png")]
    return good, bad


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("ckpt"))


def test_predict_scores_good_files_and_reports_bad_ones(workdir, images, tmp_path):
    config, wd, state = workdir
    good, bad = images
    out = str(tmp_path / "out")
    result = predict_lib.predict(config, wd, [bad[0], *good, bad[1], bad[2]], out)
    assert [p["path"] for p in result["predictions"]] == good
    assert [e["path"] for e in result["errors"]] == bad
    assert "no pixel data" in result["errors"][0]["error"]
    assert "FileNotFoundError" in result["errors"][2]["error"]
    with open(os.path.join(out, "predictions.json")) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    # Probabilities are the model's on the letterboxed image, whatever the file format.
    x = np.stack([letterbox(load_grayscale(p), 32) for p in good])[..., None]
    logits, _ = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        normalize_images(x, config.data.mean, config.data.std),
        train=False,
    )
    expected = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    got = np.array(
        [[p["probabilities"][c] for c in config.data.classes] for p in result["predictions"]]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The 16-bit copy of the same pixels gets the same scores as the 8-bit file.
    np.testing.assert_allclose(got[1], got[0], atol=1e-6)
    for p in result["predictions"]:
        with Image.open(p["overlay"]) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert len({p["overlay"] for p in result["predictions"]}) == len(good)


def test_predict_scores_a_repeated_file_once(workdir, images, tmp_path, caplog):
    """A path given twice (or spelled another way) is one image: one prediction, its own
    overlay name, honest counts, and a warning naming it."""
    config, wd, _ = workdir
    good, _ = images
    folder, name = os.path.split(good[0])
    again = os.path.join(folder, ".", name)  # the same file, spelled otherwise
    out = str(tmp_path / "out")
    with caplog.at_level("INFO"):
        result = predict_lib.predict(config, wd, [*good, good[0], again], out)
    assert [p["path"] for p in result["predictions"]] == good
    assert result["errors"] == []
    assert result["repeated"] == [{"path": good[0], "times": 3}]
    overlays = sorted(os.path.basename(p["overlay"]) for p in result["predictions"])
    assert overlays == sorted(f"{os.path.splitext(os.path.basename(p))[0]}.png" for p in good)
    assert sorted(os.listdir(out)) == sorted([*overlays, "predictions.json"])
    with open(os.path.join(out, "predictions.json")) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    assert f"{good[0]} is given 3 times; it is scored once." in caplog.text
    assert "Scored 5 of 5 images (1 given more than once, scored once)" in caplog.text


def test_predict_reports_images_too_narrow_to_letterbox(workdir, images, tmp_path):
    """A 1000 x 1 and a 3000 x 2 PNG cannot be letterboxed: both are listed with the reason
    and every good file is still scored."""
    config, wd, _ = workdir
    good, _ = images
    rng = np.random.default_rng(5)
    narrow = []
    for name, shape in (("line.png", (1, 1000)), ("sliver.png", (3000, 2))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / name)
        narrow.append(str(tmp_path / name))
    with Image.open(narrow[0]) as im:
        assert im.size == (1000, 1)
    result = predict_lib.predict(config, wd, [narrow[0], *good, narrow[1]], str(tmp_path / "out"))
    assert [p["path"] for p in result["predictions"]] == good
    assert [e["path"] for e in result["errors"]] == narrow
    for e in result["errors"]:
        assert "too narrow" in e["error"], e


@pytest.mark.parametrize(
    "variant, classes, message",
    [
        (
            "image",
            None,
            "config.model.variant is 'image' but the checkpoint was trained with 'class'",
        ),
        ("class", ("Atelectasis", "Effusion", "Mass"), "config.data.classes"),
    ],
)
def test_predict_refuses_a_checkpoint_of_another_model(
    workdir, images, tmp_path, variant, classes, message
):
    _, wd, _ = workdir
    other = tiny_config(variant)
    if classes:
        other.data.classes = classes
    with pytest.raises(ValueError, match=message):
        predict_lib.predict(other, wd, images[0][:1], str(tmp_path))


def test_wrong_checkpoint_is_named_even_without_config_json(tmp_path, images):
    _, wd, _ = make_workdir(tmp_path / "w", with_config_json=False)
    other = tiny_config("class")
    other.data.classes = ("Atelectasis", "Effusion", "Mass")
    with pytest.raises(ValueError, match=r"shapes differ: .*class_heads.* stored \(5,"):
        predict_lib.predict(other, wd, images[0][:1], str(tmp_path / "out"))


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is not present")
def test_predict_on_the_real_radiographs(workdir, tmp_path):
    config, wd, _ = workdir
    files = [
        "00000001_000.png",
        "00027426_000.png",
        "16747_3_1.jpg",
        "siim_pneumothorax_example.dcm",
    ]
    result = predict_lib.predict(config, wd, [str(REAL / f) for f in files], str(tmp_path))
    assert result["errors"] == []
    assert [pathlib.Path(p["path"]).name for p in result["predictions"]] == files
    for p in result["predictions"]:
        assert all(0.0 < v < 1.0 for v in p["probabilities"].values())


def test_predict_command_line(workdir, images, tmp_path):
    """The CLI writes every good prediction, then exits non-zero naming the bad files."""
    _, wd, _ = workdir
    good, bad = images
    out = tmp_path / "cli"
    args = [
        sys.executable,
        "-m",
        "chestattn_jax.main",
        f"--config={REPO / 'configs' / 'synthetic.py'}",
        f"--workdir={wd}",
        "--mode=predict",
        f"--images={good[0]},{bad[1]},{good[0]}",  # a repeated path counts once
        f"--output_dir={out}",
        "--config.data.image_size=32",
        "--config.model.num_filters=8",
        "--config.data.classes=('Atelectasis','Effusion','Infiltration','Mass','Nodule')",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "1 of 2 images failed" in proc.stderr and "broken.png" in proc.stderr
    result = json.loads((out / "predictions.json").read_text())
    assert [p["path"] for p in result["predictions"]] == [good[0]]


# ------------------------------------------------------------------ Python API


def test_load_and_predict_match_the_command(workdir, images, tmp_path):
    """chestattn_jax.load(workdir).predict gives what --mode=predict writes, on the same
    files, and takes arrays too."""
    import chestattn_jax

    config, wd, _ = workdir
    good, _ = images
    written = predict_lib.predict(config, wd, good, str(tmp_path / "out"))
    model = chestattn_jax.load(wd)  # the config from WORKDIR/config.json
    assert model.classes == list(config.data.classes) and model.step == 0
    out = model.predict(good)
    expected = [[p["probabilities"][c] for c in model.classes] for p in written["predictions"]]
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert out["maps"].shape[:2] == (len(good), len(model.classes))
    np.testing.assert_array_equal(out["images"][0], letterbox(load_grayscale(good[0]), 32))
    # Arrays: uint8 as is, floats in [0, 1] scaled to 0-255, a stack, a mix with paths.
    gray = load_grayscale(good[0])
    from_array = model.predict(gray)["probabilities"]
    np.testing.assert_allclose(from_array[0], out["probabilities"][0], rtol=1e-6)
    floats = model.predict(gray.astype(np.float32) / 255.0)["probabilities"]
    np.testing.assert_allclose(floats, from_array, rtol=1e-6)
    mixed = model.predict([good[1], np.stack([gray, gray])[0]])["probabilities"]
    np.testing.assert_allclose(mixed, out["probabilities"][[1, 0]], rtol=1e-6, atol=1e-7)
    assert model.predict(np.stack([gray, gray]))["probabilities"].shape == (2, 5)


def test_load_refuses_what_it_cannot_score(workdir, images, tmp_path):
    import chestattn_jax

    _, wd, _ = workdir
    model = chestattn_jax.load(wd, checkpoint="latest")
    with pytest.raises(ValueError, match=r"float image must hold finite values in \[0, 1\]"):
        model.predict(np.full((40, 40), 2.0))
    with pytest.raises(ValueError, match="uint16; a 16-bit image needs a window"):
        model.predict(np.zeros((40, 40), np.uint16))
    with pytest.raises(DataFormatError, match=r"nopixels\.dcm"):
        model.predict(images[1][0])
    with pytest.raises(ValueError, match="checkpoint='last'"):
        chestattn_jax.load(wd, checkpoint="last")
    bare = make_workdir(tmp_path / "bare", with_config_json=False)[1]
    with pytest.raises(FileNotFoundError, match=r"config\.json does not exist.*config=\.\.\."):
        chestattn_jax.load(bare)
