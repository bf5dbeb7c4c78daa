"""--mode=predict on PNG, JPEG and DICOM files, and the DICOM reader itself."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from conftest import REPO, copy_workdir, tiny_config, tiny_flags
from PIL import Image
from raw_fixtures import write_dicom

from chestattn_jax import predict_images as predict_lib
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
def test_predict_refuses_a_checkpoint_of_another_model(
    workdir, images, tmp_path, variant, classes, message
):
    _, wd, _ = workdir
    other = tiny_config(variant)
    if classes:
        other.data.classes = classes
    with pytest.raises(ValueError, match=message):
        predict_lib.predict(other, wd, images[0][:1], str(tmp_path))


@pytest.mark.slow
def test_wrong_checkpoint_is_named_even_without_config_json(tmp_path, images):
    _, wd, _ = make_workdir(tmp_path / "w", with_config_json=False)
    other = tiny_config("class")
    other.data.classes = ("Atelectasis", "Effusion", "Mass")
    with pytest.raises(ValueError, match=r"shapes differ: .*class_heads.* stored \(5,"):
        predict_lib.predict(other, wd, images[0][:1], str(tmp_path / "out"))


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is not present")
@pytest.mark.slow
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


@pytest.mark.slow
def test_predict_command_line(workdir, images, tmp_path, cli):
    """The CLI writes every good prediction, then exits non-zero naming the bad files."""
    config, wd, _ = workdir
    good, bad = images
    out = tmp_path / "cli"
    comma = str(tmp_path / "x,1.png")
    Image.open(good[0]).save(comma)
    evaluated_thresholds(tmp_path / "t", CLASSES, 0, *youden_split([0.3, 0.6, 0.4, 0.5, None]))
    thresholds = json.loads((tmp_path / "t" / "thresholds.json").read_text())["thresholds"]
    proc = cli(
        f"--workdir={wd}",
        "--mode=predict",
        # A repeated path counts once; --images may be given again (the lists are joined:
        # absl kept only the last one); a name with a comma is quoted, CSV-style.
        f"--images={good[0]},{bad[1]}",
        f'--images={good[0]},"{comma}"',
        f"--output_dir={out}",
        f"--thresholds={tmp_path / 't' / 'thresholds.json'}",
        *tiny_flags(config),  # the workdir's config: its model, the tests' batches
        timeout=300,
    )
    assert proc.returncode != 0
    assert "1 of 3 images failed" in proc.stderr and "broken.png" in proc.stderr
    result = json.loads((out / "predictions.json").read_text())
    assert [p["path"] for p in result["predictions"]] == [good[0], comma]
    assert result["repeated"] == [{"path": good[0], "times": 2}]
    assert result["thresholds"]["values"] == thresholds
    for p in result["predictions"]:
        called = {
            c: None if t is None else p["probabilities"][c] >= t for c, t in thresholds.items()
        }
        assert p["calls"] == called


# ------------------------------------------------------------------ Python API


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------- issue 21: nothing silently wrong in predict


@pytest.mark.slow
def test_an_input_in_the_output_folder_is_never_written_over(workdir, images, tmp_path):
    """Case 1: --images=DIR/a.png --output_dir=DIR wrote a.png's overlay over a.png.
    Case 2: d1/x.png, d2/x.dcm, x_2.jpg gave two overlays the name x_2.png."""
    config, wd, _ = workdir
    good, _ = images
    out = tmp_path / "out"
    out.mkdir()
    a = out / "a.png"
    Image.open(good[0]).save(a)
    other = out / "b.png"  # a file of the user's there, not an input
    other.write_bytes(b"not ours")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    x_png, x_dcm, x_2 = tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.dcm", tmp_path / "x_2.jpg"
    Image.open(good[0]).save(x_png)
    Image.open(good[0]).convert("RGB").save(x_2)
    write_dicom(x_dcm, load_grayscale(good[0]))
    b = tmp_path / "b.jpg"
    Image.open(good[0]).convert("RGB").save(b)
    inputs = [a, x_png, x_dcm, x_2, b]
    a_bytes = a.read_bytes()
    result = predict_lib.predict(config, wd, [str(p) for p in inputs], str(out))
    assert result["errors"] == []
    assert a.read_bytes() == a_bytes and other.read_bytes() == b"not ours"
    overlays = [os.path.basename(p["overlay"]) for p in result["predictions"]]
    assert overlays == ["a_2.png", "x.png", "x_2.png", "x_2_2.png", "b_2.png"]
    for name in overlays:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300  # an overlay, not an input
    # The same command again: the earlier overlays are replaced, not kept beside new ones.
    again = predict_lib.predict(config, wd, [str(p) for p in inputs], str(out))
    assert [os.path.basename(p["overlay"]) for p in again["predictions"]] == overlays
    assert sorted(os.listdir(out)) == sorted(["a.png", "b.png", "predictions.json", *overlays])
    # Fewer inputs: the overlays of the earlier run go with its predictions.json.
    predict_lib.predict(config, wd, [str(x_png)], str(out))
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "predictions.json", "x.png"]
    # An input named like the results file is refused before anything is written.
    results = out / "predictions.json"
    before = results.read_bytes()
    with pytest.raises(ValueError, match=r"predictions\.json is one of the --images"):
        predict_lib.predict(config, wd, [str(results)], str(out))
    assert results.read_bytes() == before


@pytest.mark.slow
def test_a_fifo_among_the_images_is_refused_not_read(workdir, images, tmp_path):
    """Case 15: a FIFO named x.png blocked predict forever. (On code that opens it, a
    writer opens and closes the pipe every second after 15 s, so that each blocked open
    returns and this test ends, failing.)"""
    import threading

    config, wd, _ = workdir
    good, _ = images
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    stop = threading.Event()

    def unblock():
        stop.wait(15.0)
        while not stop.wait(1.0):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting
                pass

    threading.Thread(target=unblock, daemon=True).start()
    try:
        result = predict_lib.predict(config, wd, [str(fifo), good[0]], str(tmp_path / "out"))
        with pytest.raises(DataFormatError, match=r"x\.png is a named pipe \(FIFO\)"):
            chestattn_jax_load(wd).predict([str(fifo)])
    finally:
        stop.set()
    assert [e["path"] for e in result["errors"]] == [str(fifo)]
    assert "named pipe (FIFO), not an image file" in result["errors"][0]["error"]
    assert [p["path"] for p in result["predictions"]] == [good[0]]


def chestattn_jax_load(wd):
    import chestattn_jax

    return chestattn_jax.load(wd)


@pytest.mark.parametrize(
    "field, value, trained",
    [("data.image_size", 64, 32), ("data.mean", 0.3, 0.5), ("data.std", 0.5, 0.25)],
)
@pytest.mark.slow
def test_predict_refuses_other_model_input_settings(
    workdir, images, tmp_path, field, value, trained
):
    """Case 4: --mode=predict with another image size or normalisation than training's
    exited 0 with other probabilities (evaluate refused the same). Case 16: a refused run
    says that the folder's predictions.json is an earlier run's, and leaves it."""
    from conftest import set_fields

    import chestattn_jax

    config, wd, _ = workdir
    good, _ = images
    out = tmp_path / "out"
    earlier = predict_lib.predict(config, wd, good[:1], str(out))
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    other = set_fields(config.copy_and_resolve_references(), {field: value})
    message = (
        rf"config\.{field} is {value} but the workdir was trained with {trained}.*"
        rf"allow_setting_changes.*Nothing was written: {out}/predictions\.json is an earlier "
        "run's result"
    )
    with pytest.raises(ValueError, match=message):
        predict_lib.predict(other, wd, good[:1], str(out))
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    with pytest.raises(ValueError, match=rf"config\.{field} is {value}"):
        chestattn_jax.load(wd, config=other)
    # Allowed on request, as in evaluation: then the probabilities differ, knowingly.
    allowed = set_fields(other, {"allow_setting_changes": True})
    changed = predict_lib.predict(allowed, wd, good[:1], str(out))
    assert changed["predictions"][0]["probabilities"] != earlier["predictions"][0]["probabilities"]


@pytest.mark.slow
def test_a_refused_run_of_another_variant_names_the_earlier_results(workdir, images, tmp_path):
    """Case 16: a refused --mode=predict (another variant's config) left the previous
    run's predictions.json as if it were this run's result, without a word."""
    config, wd, _ = workdir
    good, _ = images
    out = tmp_path / "out"
    predict_lib.predict(config, wd, good[:1], str(out))
    before = (out / "predictions.json").read_bytes()
    with pytest.raises(ValueError, match=r"variant.*Nothing was written: .*an earlier run's"):
        predict_lib.predict(tiny_config("image"), wd, good[:1], str(out))
    assert (out / "predictions.json").read_bytes() == before
    # Into a new folder the refusal says nothing of earlier results (there are none).
    with pytest.raises(ValueError) as refused:
        predict_lib.predict(tiny_config("image"), wd, good[:1], str(tmp_path / "new"))
    assert "earlier run" not in str(refused.value)
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_lateral_dicom_is_scored_with_a_warning(workdir, tmp_path):
    """Case 19: a lateral view (DICOM View Position LL / LATERAL) was scored without a word;
    the models are trained on frontal views."""
    import chestattn_jax

    config, wd, _ = workdir
    pixels = np.random.default_rng(4).integers(0, 256, (40, 40), dtype=np.uint8)
    paths = []
    for view in ("PA", "LL", "LATERAL", None):
        path = tmp_path / f"{view or 'none'}.dcm"
        write_dicom(path, pixels, view_position=view)
        paths.append(str(path))
    result = predict_lib.predict(config, wd, paths, str(tmp_path / "out"))
    warned = [p["warnings"] for p in result["predictions"]]
    assert warned[0] == [] and warned[3] == []
    for w, view in zip(warned[1:3], ("LL", "LATERAL"), strict=True):
        assert len(w) == 1 and f"View Position is {view!r}, not a frontal view" in w[0]
    assert chestattn_jax.load(wd).predict(paths)["warnings"] == warned


@pytest.mark.slow
def test_array_layouts_are_unambiguous(workdir, tmp_path):
    """Case 3: an (H, W, 3) RGB array was read as H images of W x 3 pixels. Case 20: an
    int64 or bool array was told that "a 16-bit image needs a window"."""
    import chestattn_jax

    _, wd, _ = workdir
    model = chestattn_jax.load(wd)
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"shape \(48, 40, 3\) is ambiguous.*\[image\]"):
        model.predict(rgb)
    rgba = np.dstack([rgb, np.full((48, 40), 255, np.uint8)])
    with pytest.raises(ValueError, match=r"ambiguous: one RGBA image"):
        model.predict(rgba)
    # One colour image in a list (or as a stack of one) is converted as its file would be.
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    from_files = model.predict([str(tmp_path / "rgb.png"), str(tmp_path / "rgba.png")])
    from_list = model.predict([rgb, rgba])
    np.testing.assert_array_equal(from_list["images"], from_files["images"])
    np.testing.assert_allclose(from_list["probabilities"], from_files["probabilities"], rtol=1e-6)
    stacked = model.predict(rgb[None])["probabilities"]
    np.testing.assert_allclose(stacked, from_files["probabilities"][:1], rtol=1e-6)
    floats = model.predict([rgb.astype(np.float32) / 255.0])["probabilities"]
    np.testing.assert_allclose(floats, stacked, rtol=1e-6)
    # A stack of grayscale images 3 pixels wide: say so with a channel axis.
    assert model.predict(np.zeros((2, 48, 3, 1), np.uint8))["probabilities"].shape == (2, 5)
    gray = rgb[..., 0]
    with pytest.raises(ValueError, match=r"got int64 \(its values span 0 to 300\).*astype"):
        model.predict(np.where(gray > 100, 300, 0).astype(np.int64))
    with pytest.raises(ValueError, match="got a bool array, a mask rather than an image"):
        model.predict(gray > 100)
    with pytest.raises(ValueError, match="uint16; a 16-bit image needs a window"):
        model.predict(gray.astype(np.uint16))
    with pytest.raises(ValueError, match=r"cannot read an array of shape \(2, 3, 4, 5, 6\)"):
        model.predict(np.zeros((2, 3, 4, 5, 6), np.uint8))


@pytest.mark.slow
def test_load_names_a_missing_folder_and_an_experiment_root(workdir, tmp_path):
    """Case 18: load(MISSING) reported a missing config.json. Case 17: load(ROOT) and
    --mode=evaluate on an experiment's root said "pass the config" / "train one first"
    instead of naming its cells."""
    import shutil

    import chestattn_jax
    from chestattn_jax import evaluation

    config, wd, _ = workdir
    missing = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError, match=rf"{missing} does not exist: give the folder"):
        chestattn_jax.load(str(missing))
    root = tmp_path / "root"
    cells = ["fold0-class-lam0.1-seed0", "fold0-image-seed0"]
    for cell in cells:
        shutil.copytree(wd, root / cell)
    (root / "report").mkdir()  # the experiment's report is not a run
    named = rf"holds no training run itself but 2 in its subfolders.*{cells[0]}, {cells[1]}\."
    with pytest.raises(FileNotFoundError, match=named + rf".*load\('{root}/{cells[0]}'\)"):
        chestattn_jax.load(str(root))
    with pytest.raises(FileNotFoundError, match=named + rf".*--workdir={root}/{cells[0]}"):
        evaluation.evaluate(config, str(root))
    assert sorted(os.listdir(root)) == sorted([*cells, "report"])  # nothing written
    assert chestattn_jax.load(str(root / cells[0])).step == 0


# ------------------------------------- calls at the thresholds chosen on the validation split


def youden_split(cuts, n=20):
    """Validation probabilities and labels, ``(2n + 2, k)``, whose Youden threshold for
    class j is ``cuts[j]`` (``None``: no positives, hence no threshold): ``n`` positives at
    and above the cut, ``n`` negatives below it, and one of each on the wrong side, so
    that a recalibration can be fitted (the labels are not separated)."""
    probs, labels = [], []
    for cut in cuts:
        if cut is None:
            probs.append(np.linspace(0.05, 0.95, 2 * n + 2))
            labels.append(np.zeros(2 * n + 2))
            continue
        pos = cut + (1 - cut) * np.arange(n) / n
        neg = cut * np.arange(1, n + 1) / (n + 1)
        probs.append(np.r_[pos, cut / 2, neg, cut + (1 - cut) * 0.525])
        labels.append(np.r_[np.ones(n + 1), np.zeros(n + 1)])
    return np.stack(probs, 1), np.stack(labels, 1)


def evaluated_thresholds(out_dir, classes, step, val_probs, val_labels) -> dict:
    """``OUT/thresholds.json`` as ``--mode=evaluate`` writes it: the operating_points
    evaluator, after the calibration evaluator's recalibration, on ``(val_probs,
    val_labels)`` as the validation split of an evaluation at ``step``. Returns it."""
    from chestattn_jax.calibration import fit_recalibration
    from chestattn_jax.evaluation.evaluators import Context, operating_points
    from chestattn_jax.evaluation.inference_pass import Record

    classes = tuple(classes)
    config = tiny_config()
    config.eval.bootstrap_draws = 10
    mask = np.ones_like(val_labels)
    ids = np.array([f"p{i}" for i in range(len(val_labels))])
    record = Record(val_probs, val_labels, mask, ids, ids, classes, classes)
    ctx = Context(config, str(out_dir), None, None, classes, classes, validation=record)
    metrics = {
        "step": step,
        "calibration": {"recalibration": fit_recalibration(val_probs, val_labels, mask, classes)},
    }
    os.makedirs(out_dir, exist_ok=True)
    operating_points.Evaluator(ctx).finish(record, metrics)
    return json.loads((pathlib.Path(out_dir) / "thresholds.json").read_text())


CLASSES = list(tiny_config().data.classes)


def test_calls_are_probability_at_least_threshold():
    from chestattn_jax.image_inputs import calls

    rng = np.random.default_rng(7)
    probs = rng.random((30, len(CLASSES)))
    values = dict(zip(CLASSES, [0.2, None, 0.5, 0.9, None], strict=True))
    probs[3, 0] = 0.2  # exactly at the threshold: positive
    got = calls(probs, CLASSES, values)
    for i in range(len(probs)):
        for j, c in enumerate(CLASSES):
            expected = None if values[c] is None else bool(probs[i, j] >= values[c])
            assert got[i][c] is expected, (i, c)
    assert got[3]["Atelectasis"] is True
    assert {got[i]["Mass"] for i in range(len(probs))} == {True, False}


def test_thresholds_files_are_checked_field_by_field(tmp_path):
    """A thresholds file as evaluation writes it reads back as it is; a damaged one is
    refused with a message naming the file and the field."""
    from chestattn_jax.trained_model import read_thresholds

    saved = evaluated_thresholds(tmp_path, CLASSES, 4, *youden_split([0.3, 0.6, 0.4, 0.5, None]))
    assert saved["thresholds"]["Effusion"] == 0.6 and saved["thresholds"]["Nodule"] is None
    good = tmp_path / "thresholds.json"
    read = read_thresholds(good)
    assert read["values"] == saved["thresholds"] and read["step"] == 4
    assert read["reasons"] == {"Nodule": "no validation positives"}
    assert read["recalibration"] == saved["recalibration"] and read["rule"] == "youden"
    assert read["source"] == str(good)

    def changed(**fields):
        return {**saved, **fields}

    recal = saved["recalibration"]
    cases = [
        ({k: v for k, v in saved.items() if k != "step"}, "'step' is missing"),
        (changed(classes="Atelectasis"), "'classes' must be a non-empty list"),
        (changed(classes=[*CLASSES[:-1], CLASSES[0]]), "'classes' must be .* distinct"),
        (changed(thresholds=[0.5] * 5), "'thresholds' must map each class"),
        (changed(thresholds={**saved["thresholds"], "Mass": 1.5}), "'thresholds.Mass' must be"),
        (changed(thresholds={**saved["thresholds"], "Mass": "0.4"}), "'thresholds.Mass' must"),
        (
            changed(thresholds={c: 0.5 for c in CLASSES[:-1]}),
            r"'thresholds.Nodule' is missing \(null for a class without a threshold\)",
        ),
        (changed(thresholds={**saved["thresholds"], "Hernia": 0.5}), "'thresholds.Hernia' names"),
        (changed(step="4"), "'step' must be a checkpoint step"),
        (changed(step=True), "'step' must be a checkpoint step"),
        (changed(rule=""), "'rule' must be a non-empty string"),
        (changed(reasons=["x"]), "'reasons' must map"),
        (changed(recalibration={**recal, "method": "isotonic"}), "'recalibration.method'"),
        (
            changed(recalibration={**recal, "class_names": CLASSES[::-1]}),
            "'recalibration.class_names'",
        ),
        (
            changed(
                recalibration={
                    **recal,
                    "classes": {**recal["classes"], "Mass": {**recal["classes"]["Mass"], "a": -1}},
                }
            ),
            "'recalibration.classes.Mass.a' must be a positive number",
        ),
    ]
    bad = tmp_path / "bad.json"
    for content, message in cases:
        bad.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=rf"thresholds file {bad}: field {message}"):
            read_thresholds(bad)
    bad.write_text('{"rule": "youden",')
    with pytest.raises(ValueError, match=rf"thresholds file {bad} is not valid JSON"):
        read_thresholds(bad)
    with pytest.raises(FileNotFoundError, match=r"thresholds file .*missing\.json does not exist"):
        read_thresholds(tmp_path / "missing.json")


def test_which_thresholds_a_model_is_called_at(tmp_path):
    """WORKDIR/eval/thresholds.json counts only at its own checkpoint step and classes
    (else no calls, and why); a file given instead must fit, or it is refused."""
    from chestattn_jax.trained_model import model_thresholds

    wd = tmp_path / "w"
    split = youden_split([0.3, 0.6, 0.4, 0.5, None])
    found, why = model_thresholds(wd, CLASSES, 4)
    own = wd / "eval" / "thresholds.json"
    assert found is None and why.startswith(f"no thresholds: {own} does not exist")
    evaluated_thresholds(wd / "eval", CLASSES, 4, *split)
    found, why = model_thresholds(wd, CLASSES, 4)
    assert why is None and found["source"] == str(own) and found["values"]["Effusion"] == 0.6
    assert model_thresholds(wd, CLASSES, 8, which="latest") == (
        None,
        f"no thresholds: {own} is from step 4, the restored checkpoint (latest) is step 8; "
        "evaluate again, or give the thresholds.json of an evaluation at step 8 "
        "(--thresholds=PATH, load(..., thresholds=PATH)).",
    )
    other = ["Atelectasis", "Effusion", "Mass"]
    found, why = model_thresholds(wd, other, 4)
    assert found is None and f"{own} is for the classes {CLASSES}, the model's are" in why
    # A given file: used whatever the workdir holds, if it fits; refused if not.
    given = tmp_path / "given" / "thresholds.json"
    evaluated_thresholds(given.parent, CLASSES, 8, *youden_split([0.1, 0.2, 0.3, 0.4, 0.5]))
    found, why = model_thresholds(wd, CLASSES, 8, given)
    assert why is None and found["source"] == str(given) and found["values"]["Nodule"] == 0.5
    with pytest.raises(ValueError, match=r"field 'step' is 8, but the restored checkpoint"):
        model_thresholds(wd, CLASSES, 4, given)
    with pytest.raises(ValueError, match=r"field 'classes' is .*another model's thresholds"):
        model_thresholds(wd, other, 8, given)
    # Thresholds set by hand, at no checkpoint (step null), are taken as they are.
    by_hand = tmp_path / "by_hand.json"
    by_hand.write_text(json.dumps({**json.loads(given.read_text()), "step": None}))
    assert model_thresholds(wd, CLASSES, 4, by_hand)[0]["step"] is None
    # The workdir's own file, damaged: refused, naming it and the field.
    own.write_text(json.dumps({**json.loads(own.read_text()), "thresholds": {}}))
    with pytest.raises(ValueError, match=rf"{own}: field 'thresholds.Atelectasis' is missing"):
        model_thresholds(wd, CLASSES, 4)


def test_a_malformed_thresholds_file_is_refused_before_anything_is_written(images, tmp_path):
    """--thresholds=BAD is refused naming the field before the checkpoint is read or the
    output folder touched: an earlier run's results there are left as they were."""
    good, _ = images
    config = tiny_config()
    wd, out = tmp_path / "w", tmp_path / "out"
    wd.mkdir()
    out.mkdir()
    (out / "predictions.json").write_text("{}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rule": "youden", "classes": CLASSES, "thresholds": {}}))
    message = (
        rf"thresholds file {bad}: field 'chosen_on' is missing.*Nothing was written: "
        rf"{out}/predictions\.json is an earlier run's result"
    )
    with pytest.raises(ValueError, match=message):
        predict_lib.predict(config, str(wd), good, str(out), thresholds=str(bad))
    assert os.listdir(out) == ["predictions.json"]
    assert (out / "predictions.json").read_text() == "{}"
    assert os.listdir(wd) == []


@pytest.mark.slow
def test_predict_calls_at_the_evaluation_thresholds(workdir, images, tmp_path):
    """predictions.json and load().predict call each class at the thresholds of the
    workdir's evaluation (prob >= threshold; null without one), give the recalibrated
    probabilities beside the raw ones, and say why when there are no calls."""
    from chestattn_jax import trained_model

    config, wd, _ = workdir
    good, _ = images
    w = copy_workdir(wd, tmp_path / "w")
    model = trained_model.load(str(w))
    assert (
        model.thresholds is None and "eval/thresholds.json does not exist" in model.thresholds_why
    )
    plain = model.predict(good)
    assert plain["calls"] is None and plain["recalibrated_probabilities"] is None
    assert plain["thresholds"] is None and plain["thresholds_why"] == model.thresholds_why
    # Thresholds between the images' lowest and highest probability (the last class has
    # none), chosen on a validation split by the evaluator.
    probs = plain["probabilities"]
    cuts = [*((probs.min(0) + probs.max(0)) / 2)[:-1].tolist(), None]
    saved = evaluated_thresholds(w / "eval", CLASSES, 0, *youden_split(cuts))
    assert saved["thresholds"] == dict(zip(CLASSES, cuts, strict=True))

    out = tmp_path / "out"
    result = predict_lib.predict(config, str(w), good, str(out))
    assert json.loads((out / "predictions.json").read_text()) == json.loads(json.dumps(result))
    t = result["thresholds"]
    assert result["thresholds_why"] is None and t["source"] == str(w / "eval" / "thresholds.json")
    assert t["values"] == saved["thresholds"] and t["rule"] == "youden" and t["step"] == 0
    assert (
        t["chosen_on"] == saved["chosen_on"]
        and t["reasons"]["Nodule"] == saved["reasons"]["Nodule"]
    )
    seen = set()
    for p in result["predictions"]:
        for c in CLASSES:
            threshold = saved["thresholds"][c]
            expected = None if threshold is None else p["probabilities"][c] >= threshold
            assert p["calls"][c] is expected, (p["path"], c)
            seen.add(expected)
    assert seen == {True, False, None}
    # The recalibration fitted beside the thresholds, sigmoid(a logit(p) + b) per class.
    params = saved["recalibration"]["classes"]
    assert any(params[c]["fitted"] for c in CLASSES)
    for p in result["predictions"]:
        for c in CLASSES:
            z = np.log(p["probabilities"][c] / (1 - p["probabilities"][c]))
            expected = 1 / (1 + np.exp(-(params[c]["a"] * z + params[c]["b"])))
            np.testing.assert_allclose(p["recalibrated_probabilities"][c], expected, rtol=1e-9)
    # load().predict gives the same calls, at the same thresholds.
    out_load = trained_model.load(str(w)).predict(good)
    assert out_load["calls"] == [p["calls"] for p in result["predictions"]]
    assert out_load["thresholds"] == t
    np.testing.assert_allclose(
        out_load["recalibrated_probabilities"],
        [[p["recalibrated_probabilities"][c] for c in CLASSES] for p in result["predictions"]],
        rtol=1e-9,
    )

    # Thresholds of another checkpoint (step 8): no calls, and why, in predictions.json.
    evaluated_thresholds(w / "eval", CLASSES, 8, *youden_split(cuts))
    stale = predict_lib.predict(config, str(w), good, str(out))
    assert stale["thresholds"] is None
    assert stale["thresholds_why"] == (
        f"no thresholds: {w}/eval/thresholds.json is from step 8, the restored checkpoint "
        "(best) is step 0; evaluate again, or give the thresholds.json of an evaluation at "
        "step 0 (--thresholds=PATH, load(..., thresholds=PATH))."
    )
    assert all(p["calls"] is None for p in stale["predictions"])
    assert all(p["recalibrated_probabilities"] is None for p in stale["predictions"])


def test_cpu_inference_options_are_used_where_xla_takes_them(monkeypatch):
    """Prediction on a CPU compiles with CPU_INFERENCE_OPTIONS; an XLA that does not know
    an option refuses it, and then prediction compiles with its defaults instead of failing."""
    from chestattn_jax import image_inputs

    image_inputs.cpu_inference_options.cache_clear()
    try:
        assert image_inputs.cpu_inference_options() == image_inputs.CPU_INFERENCE_OPTIONS
        image_inputs.cpu_inference_options.cache_clear()
        monkeypatch.setattr(
            image_inputs, "CPU_INFERENCE_OPTIONS", {"xla_cpu_no_such_option_anywhere": True}
        )
        assert image_inputs.cpu_inference_options() is None
    finally:
        image_inputs.cpu_inference_options.cache_clear()
