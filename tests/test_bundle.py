"""The bundle: a trained model as one file that predicts without the model code.

One bundle of the session's tiny run is exported per module; its predictions are held to
``chestattn_jax.load(W).predict`` on the same files (phantoms, and the four real
radiographs of ``../shared`` where present) in a process that cannot import the model
code, flax or optax; ``verify`` is shown a good bundle and tampered ones."""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from conftest import REPO, copy_workdir, subprocess_env

REAL = REPO.parent / "shared" / "data" / "real"
REAL_FILES = (
    "00000001_000.png",
    "00027426_000.png",
    "16747_3_1.jpg",
    "siim_pneumothorax_example.dcm",
)
BLOCKED = ("chestattn_jax.models", "chestattn_jax.trained_model", "flax", "optax")


def real_files() -> list[str]:
    """The four real radiographs (PNG, JPEG, DICOM); the test is skipped, saying so, where
    ../shared is absent, and fails where it is present without one of them."""
    if not REAL.parent.parent.is_dir():
        pytest.skip(f"{REAL.parent.parent} is absent: no real radiographs to predict")
    paths = [REAL / name for name in REAL_FILES]
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"../shared is present but lacks {missing}"
    return [str(p) for p in paths]


def phantom_arrays():
    """Phantom inputs in the array forms predict takes: uint8, [0, 1] float, RGB."""
    from chestattn_jax.data import synthetic

    cfg = synthetic.PhantomConfig(image_size=48)
    a, b, c = (synthetic.render(7, i, cfg)["image"] for i in range(3))
    return [a, b[:, 6:42].astype(np.float32) / 255.0, np.repeat(c[..., None], 3, -1)]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The bundle of the tiny run's best checkpoint, and how long the export took."""
    from chestattn_jax.bundle.export import export_bundle

    _, workdir = tiny_run
    out = tmp_path_factory.mktemp("bundle") / "tiny.zip"
    start = time.perf_counter()
    metadata = export_bundle(workdir, out)
    return out, metadata, time.perf_counter() - start


@pytest.fixture(scope="module")
def workdir_model(tiny_run):
    import chestattn_jax

    return chestattn_jax.load(str(tiny_run[1]))


def tampered(src, dst, change) -> pathlib.Path:
    """A copy of the bundle ``src`` with ``change(members)`` applied to its members."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    change(members)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return pathlib.Path(dst)


def _metadata_change(fn):
    def change(members):
        m = json.loads(members["metadata.json"])
        fn(m)
        members["metadata.json"] = json.dumps(m).encode()

    return change


BLOCKED_PREDICT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{{name}} is blocked in this process")
            return None

    sys.meta_path.insert(0, Blocker())
    from chestattn_jax import bundle

    inputs = list(np.load({arrays!r}, allow_pickle=True)["items"]) + {files!r}
    model = bundle.load({path!r})
    out = model.predict(inputs)
    emb = model.embed(inputs)
    np.savez({result!r}, probabilities=out["probabilities"], maps=out["maps"],
             images=out["images"], recalibrated=out["recalibrated_probabilities"],
             **{{"embed_" + k: emb[k] for k in ("gate1", "gate2", "gate3")}})
    from chestattn_jax.bundle import cli  # the predict command, in the same process

    scored = cli.predict({path!r}, {cli_files!r}, {out_dir!r})
    loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print(json.dumps({{"calls": out["calls"], "warnings": out["warnings"], "loaded": loaded,
                      "global": emb["global"] is None, "command": scored}}))
    """
)


@pytest.mark.slow
def test_bundle_predicts_as_the_workdir_in_a_process_without_model_code(
    exported, workdir_model, tmp_path
):
    path, _, seconds = exported
    print(f"export (3 platforms, tiny model): {seconds:.1f} s")
    arrays = phantom_arrays()
    items = np.empty(len(arrays), object)
    items[:] = arrays
    np.savez(tmp_path / "arrays.npz", items=items)
    files = real_files()
    from PIL import Image

    Image.fromarray(arrays[0]).save(tmp_path / "phantom.png")  # read back as arrays[0]
    cli_files = [str(tmp_path / "phantom.png"), *files]
    script = BLOCKED_PREDICT.format(
        blocked=BLOCKED,
        arrays=str(tmp_path / "arrays.npz"),
        files=files,
        path=str(path),
        result=str(tmp_path / "out.npz"),
        cli_files=cli_files,
        out_dir=str(tmp_path / "predicted"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    got = np.load(tmp_path / "out.npz")
    want = workdir_model.predict(arrays + files)
    np.testing.assert_array_equal(got["images"], want["images"])
    assert got["probabilities"].dtype == np.float64
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["maps"], want["maps"], rtol=0, atol=1e-5)
    assert report["calls"] == want["calls"] and want["calls"] is not None
    np.testing.assert_allclose(
        got["recalibrated"], want["recalibrated_probabilities"], rtol=0, atol=1e-5
    )
    assert report["warnings"] == want["warnings"]
    # The predict command, run in that process too: the same scores, one overlay per file.
    command = report["command"]
    assert [p["path"] for p in command["predictions"]] == cli_files and not command["errors"]
    rows = [0, *range(len(arrays), len(arrays) + len(files))]
    scores = [list(p["probabilities"].values()) for p in command["predictions"]]
    np.testing.assert_allclose(scores, want["probabilities"][rows], rtol=0, atol=1e-5)
    assert [p["calls"] for p in command["predictions"]] == [want["calls"][r] for r in rows]
    assert all(pathlib.Path(p["overlay"]).is_file() for p in command["predictions"])
    assert json.loads((tmp_path / "predicted" / "predictions.json").read_text()) == command
    # The embeddings: the workdir's, and what the class heads read (Eq. 4 recomputed from
    # them by hand with the bundle's own stored variables gives the workdir's logits).
    embedded = workdir_model.embed(arrays + files)
    assert embedded["global"] is None and report["global"]  # pc + softmax: stage 4 skipped
    for gate in ("gate1", "gate2", "gate3"):
        np.testing.assert_allclose(got[f"embed_{gate}"], embedded[gate], rtol=0, atol=1e-5)
    from chestattn_jax.bundle_file import trained_variables

    _, variables = trained_variables(path)
    p = variables["params"]["class_heads"]["branch"]["classifier"]
    logits = np.log(want["probabilities"] / (1 - want["probabilities"]))
    for j in range(logits.shape[1]):
        feats = np.concatenate(
            [got["embed_gate1"], got["embed_gate2"], got["embed_gate3"][:, j]], -1
        )
        np.testing.assert_allclose(
            feats @ p["kernel"][j][:, 0] + p["bias"][j][0], logits[:, j], atol=1e-4
        )


def test_trained_variables_are_the_checkpoints(exported, workdir_model, tiny_run):
    import jax

    from chestattn_jax.bundle_file import trained_variables

    config, variables = trained_variables(exported[0])
    assert config.to_dict() == tiny_run[0].to_dict()
    state = workdir_model.state
    want = {"params": state.params, "batch_stats": state.batch_stats}
    got_leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    want_leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(want))[0]
    assert [k for k, _ in got_leaves] == [k for k, _ in want_leaves]
    for (_, a), (_, b) in zip(got_leaves, want_leaves, strict=True):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_metadata_and_model_card(exported, tiny_run):
    path, m, _ = exported
    workdir = tiny_run[1]
    evaluated = json.loads((workdir / "eval" / "metrics.json").read_text())
    thresholds = json.loads((workdir / "eval" / "thresholds.json").read_text())
    dataset = json.loads((workdir / "dataset.json").read_text())
    assert m["classes"] == list(tiny_run[0].data.classes)
    assert m["input"]["shape"] == ["batch", 32, 32, 1] and m["input"]["dtype"] == "uint8"
    assert m["outputs"]["maps"]["shape"] == ["batch", 5, 2, 2]
    assert m["outputs"]["pooled/gate3"]["shape"][:2] == ["batch", 5]
    assert m["export"]["platforms"] == ["cpu", "cuda", "tpu"]
    assert m["data"]["fingerprint"] == dataset["fingerprint"] and m["data"]["phantoms"]
    assert m["evaluation"]["mean_auc"] == {
        "value": evaluated["mean_auc"],
        "ci": evaluated["bootstrap"]["mean_ci"],
    }
    assert m["thresholds"]["values"] == thresholds["thresholds"]
    assert m["thresholds"]["recalibration"] == thresholds["recalibration"]
    with zipfile.ZipFile(path) as z:
        card = z.read("MODEL_CARD.md").decode()
        inputs = np.load(io.BytesIO(z.read("reference/inputs.npy")))
    lo, hi = evaluated["bootstrap"]["mean_ci"]
    assert f"Mean AUC: {evaluated['mean_auc']:.3f} ({lo:.3f}-{hi:.3f})" in card
    assert "Trained on synthetic phantoms" in card and "Subgroups" in card
    assert inputs.shape == (4, 32, 32) and inputs.dtype == np.uint8
    assert (inputs[-1][:, :2] == 0).all()  # the portrait, letterboxed: padded at the sides


def test_verify_names_the_part_that_fails(exported, tmp_path, monkeypatch):
    from jax import export

    from chestattn_jax.bundle.verify import verify
    from chestattn_jax.bundle_file import BundleError, trained_variables

    path = exported[0]
    assert [line.split(":")[0] for line in verify(path)] == [
        "container",
        "config",
        "function",
        "metadata",
        "variables",
        "reference outputs",
    ]

    def outputs_changed(members):
        with np.load(io.BytesIO(members["reference/outputs.npz"])) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["probabilities"][1, 2] += 0.01
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        members["reference/outputs.npz"] = buf.getvalue()

    def shape_changed(m):
        m["outputs"]["maps"]["shape"] = ["batch", 5, 3, 3]

    def version_changed(m):
        m["format_version"] = 99

    cases = {
        "reference outputs": (outputs_changed, "probabilities of reference image 1"),
        "metadata": (_metadata_change(shape_changed), "outputs.maps.shape"),
        "metadata ": (_metadata_change(version_changed), "format_version 99"),
    }
    for part, (change, text) in cases.items():
        bad = tampered(path, tmp_path / f"{len(text)}.zip", change)
        with pytest.raises(BundleError, match=text) as e:
            verify(bad)
        assert e.value.part == part.strip()

    # A config.json of an older version: the bundle still predicts (verify says so), but
    # fine-tuning from it is refused, naming the field and the version that can.
    def config_older(members):
        config = json.loads(members["config.json"])
        del config["model"]["dtype"]
        members["config.json"] = json.dumps(config).encode()

    older = tampered(path, tmp_path / "older.zip", config_older)
    assert "without model.dtype" in verify(older)[1]
    with pytest.raises(BundleError, match=r"no field model\.dtype.*versions\.chestattn_jax"):
        trained_variables(older)
    foreign = tampered(path, tmp_path / "foreign.zip", lambda m: m.pop("metadata.json"))
    with pytest.raises(BundleError, match=r"without metadata\.json: not a bundle"):
        verify(foreign)
    lost = tampered(path, tmp_path / "lost.zip", lambda m: m.pop("model.jax_exported"))
    with pytest.raises(BundleError, match=r"members missing: model\.jax_exported") as e:
        verify(lost)
    assert e.value.part == "container"
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BundleError, match="truncated") as e:
        verify(truncated)
    assert e.value.part == "container"
    # A jaxlib whose jax.export window no longer holds the bundle's calling convention.
    monkeypatch.setattr(export, "minimum_supported_calling_convention_version", 99)
    monkeypatch.setattr(export, "maximum_supported_calling_convention_version", 100)
    with pytest.raises(BundleError, match="compatibility window") as e:
        verify(path)
    assert e.value.part == "function"


def test_bad_images_are_refused_naming_the_cause(exported, tmp_path):
    from chestattn_jax import bundle
    from chestattn_jax.data.raw import DataFormatError

    model = bundle.load(exported[0])
    with pytest.raises(ValueError, match="int32"):
        model.predict(np.zeros((40, 40), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.predict(np.full((40, 40), 2.0))
    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(DataFormatError, match=r"a\.png"):
        model.predict(str(tmp_path / "a.png"))


@pytest.mark.slow
def test_commands_one_line_per_mistake(exported, tmp_path, cli):
    path = exported[0]
    (tmp_path / "out").mkdir()
    png = tmp_path / "out" / "x.png"  # an input in the output folder is never written over
    from PIL import Image

    Image.fromarray(phantom_arrays()[0]).save(png)
    before = png.read_bytes()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = cli(
        "predict", str(path), str(png), str(tmp_path / "bad.png"), "--output_dir",
        str(tmp_path / "out"), module="chestattn_jax.bundle",
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("FATAL: 1 of 2 images failed")
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert written == json.loads(out.stdout)
    assert [p["path"] for p in written["predictions"]] == [str(png)]
    assert written["errors"][0]["path"] == str(tmp_path / "bad.png")
    assert written["predictions"][0]["overlay"] == str(tmp_path / "out" / "x_2.png")
    assert (tmp_path / "out" / "x_2.png").exists() and png.read_bytes() == before
    foreign = cli("verify", str(png), module="chestattn_jax.bundle")
    assert foreign.returncode == 1 and "Traceback" not in foreign.stderr
    (line,) = foreign.stderr.strip().splitlines()
    assert line.startswith(f"FATAL: {png}: container: not a readable zip file")


def test_export_of_a_step_has_no_evaluation_or_thresholds_of_another(tiny_run, tmp_path):
    from chestattn_jax import bundle
    from chestattn_jax.bundle.export import export_bundle
    from chestattn_jax.bundle_file import BundleError

    # The tiny run was evaluated (and its thresholds chosen) at its best step, 4.
    m = export_bundle(tiny_run[1], tmp_path / "s8.zip", checkpoint=8)
    assert m["model"]["checkpoint"] == {"which": "step", "step": 8}
    assert m["evaluation"] is None and "from step 4" in m["evaluation_why"]
    assert m["thresholds"] is None and "from step 4" in m["thresholds_why"]
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 12; it has steps 4, 8"):
        export_bundle(tiny_run[1], tmp_path / "s12.zip", checkpoint=12)
    assert not (tmp_path / "s12.zip").exists()
    with pytest.raises(BundleError, match="container: no such file"):
        bundle.load(tmp_path / "s12.zip")


def _variables_changed(fn):
    """A change of ``variables.npz``: ``fn(arrays)`` applied to its arrays."""

    def change(members):
        with np.load(io.BytesIO(members["variables.npz"])) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        members["variables.npz"] = buf.getvalue()

    return change


def test_a_failed_prediction_leaves_the_output_folder_as_it_was(tmp_path):
    from PIL import Image

    from chestattn_jax import predict_images

    class Failing:
        image_size, classes, step, variant = 32, ["a"], 1, "class"

        def predict_letterboxed(self, images, batch_size=None):
            raise RuntimeError("the model does not run here")

    png = tmp_path / "x.png"
    Image.fromarray(phantom_arrays()[0]).save(png)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "predictions.json").write_text('{"predictions": []}')
    for out_dir in (earlier, tmp_path / "new"):
        with pytest.raises(RuntimeError, match="does not run here"):
            predict_images.score_files(Failing(), [str(png)], [], str(out_dir), {}, "bundle")
    assert (earlier / "predictions.json").read_text() == '{"predictions": []}'
    assert not (tmp_path / "new").exists()


def test_load_checks_the_variables_and_the_platform(exported, tmp_path, monkeypatch):
    from chestattn_jax import bundle
    from chestattn_jax.bundle import runtime
    from chestattn_jax.bundle_file import BundleError

    def halved(arrays):
        key = sorted(arrays)[0]
        arrays[key] = arrays[key].astype(np.float16)

    bad = tampered(exported[0], tmp_path / "f16.zip", _variables_changed(halved))
    with pytest.raises(BundleError, match=r"variables: .*float16, the function takes") as e:
        bundle.load(bad)
    assert len(str(e.value).splitlines()) == 1
    monkeypatch.setattr(runtime, "local_platform", lambda: "rocm")
    with pytest.raises(BundleError, match=r"function: exported for cpu, cuda, tpu, not .* rocm"):
        bundle.load(exported[0])


def damaged_member(src, dst, name: str) -> pathlib.Path:
    """A copy of the bundle ``src`` with bytes in the middle of member ``name``'s stored
    (compressed) data inverted."""
    data = bytearray(pathlib.Path(src).read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(name)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    # The local header: 30 bytes, then the name and extra field, then the data.
    start = info.header_offset + 30
    start += int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    start += int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    middle = start + info.compress_size // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    pathlib.Path(dst).write_bytes(bytes(data))
    return pathlib.Path(dst)


def test_a_damaged_compressed_member_is_one_line_naming_it(exported, tmp_path):
    from chestattn_jax import bundle
    from chestattn_jax.bundle.verify import verify
    from chestattn_jax.bundle_file import BundleError

    card = damaged_member(exported[0], tmp_path / "card.zip", "MODEL_CARD.md")
    with pytest.raises(BundleError, match=r"model card: MODEL_CARD\.md cannot be read") as e:
        bundle.load(card)
    assert len(str(e.value).splitlines()) == 1
    config = damaged_member(exported[0], tmp_path / "config.zip", "config.json")
    with pytest.raises(BundleError, match=r"config: config\.json cannot be read") as e:
        verify(config)
    assert "JSON" not in str(e.value) and str(e.value).count(str(config)) == 1


def test_export_of_an_unreadable_step_is_one_line(tiny_run, tmp_path):
    import os

    from chestattn_jax.bundle.export import export_bundle
    from chestattn_jax.checkpointing import CheckpointError

    workdir = copy_workdir(tiny_run[1], tmp_path / "w")
    # What a failing disk leaves: step 8's largest array file cut in half.
    state = workdir / "checkpoints" / "8" / "state"
    chunk = max((p for p in state.rglob("*") if p.is_file()), key=os.path.getsize)
    chunk.write_bytes(chunk.read_bytes()[: os.path.getsize(chunk) // 2])
    with pytest.raises(CheckpointError) as e:
        export_bundle(workdir, tmp_path / "s8.zip", checkpoint=8)
    (line,) = str(e.value).splitlines()
    assert line.startswith(f"--checkpoint=8: checkpoint step 8 of {workdir} cannot be read (")
    assert not (tmp_path / "s8.zip").exists()


def test_export_platforms_are_known_names_with_the_local_one(tiny_run, tmp_path):
    from chestattn_jax.bundle import runtime
    from chestattn_jax.bundle.export import export_bundle

    here = runtime.local_platform()
    other = next(p for p in ("cpu", "cuda", "tpu") if p != here)
    cases = {
        (here, "gpu"): "--platforms=.*unknown platform 'gpu'; give some of cpu, cuda, rocm, tpu",
        (other,): f"--platforms={other} lacks this machine's platform, {here}",
        (): f"--platforms= lacks this machine's platform, {here}",
    }
    for platforms, message in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            export_bundle(tiny_run[1], tmp_path / "b.zip", platforms=platforms)
        assert len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "b.zip").exists()


def test_config_and_metadata_must_agree(exported, tmp_path):
    from chestattn_jax import bundle
    from chestattn_jax.bundle.verify import verify
    from chestattn_jax.bundle_file import BundleError, trained_variables

    def config_changed(fn):
        def change(members):
            config = json.loads(members["config.json"])
            fn(config)
            members["config.json"] = json.dumps(config).encode()

        return change

    cases = {
        "data.classes": lambda c: c["data"]["classes"].reverse(),
        "data.mean": lambda c: c["data"].update(mean=c["data"]["mean"] + 0.1),
        "data.image_size": lambda c: c["data"].update(image_size=64),
        "model.variant": lambda c: c["model"].update(variant="image"),
    }
    for field, fn in cases.items():
        bad = tampered(exported[0], tmp_path / f"{field}.zip", config_changed(fn))
        for read in (verify, trained_variables):
            with pytest.raises(BundleError, match=rf"config\.json's {field} is .* but") as e:
                read(bad)
            assert e.value.part == "config" and len(str(e.value).splitlines()) == 1

    # The function scores 5 classes: a metadata.json listing 4 is refused as it loads.
    def one_class_fewer(m):
        m["classes"].pop()
        m["thresholds"] = None

    fewer = tampered(exported[0], tmp_path / "fewer.zip", _metadata_change(one_class_fewer))
    with pytest.raises(BundleError, match="classes lists 4 classes, the function gives 5"):
        bundle.load(fewer)


def test_mangled_metadata_is_one_line_naming_the_field(exported, tmp_path):
    from chestattn_jax import bundle
    from chestattn_jax.bundle.verify import verify
    from chestattn_jax.bundle_file import BundleError

    def put(dotted, value):
        def fn(m):
            *parents, last = dotted.split(".")
            for p in parents:
                m = m[p]
            m[last] = value

        return _metadata_change(fn)

    first = exported[1]["classes"][0]
    cases = {
        "input": ("x", r"field 'input' is a string \('x'\), not an object"),
        "outputs.maps": (None, r"field 'outputs\.maps' is null, not an object"),
        "variables": ("x", r"field 'variables' is a string"),
        "reference": ("x", r"field 'reference' is a string"),
        "input.image_size": (True, r"field 'input\.image_size' is a boolean"),
        "thresholds": ("x", r"field 'thresholds' is a string"),
        f"thresholds.values.{first}": (1.5, rf"'thresholds\.values\.{first}' must be in \[0, 1\]"),
        "thresholds.values": ({}, rf"'thresholds\.values\.{first}' is missing"),
        "thresholds.recalibration.class_names": (["x"], r"recalibration\.class_names' must be"),
    }
    for n, (field, (value, message)) in enumerate(cases.items()):
        bad = tampered(exported[0], tmp_path / f"{n}.zip", put(field, value))
        for read in (verify, bundle.load):
            with pytest.raises(BundleError, match=message) as e:
                read(bad)
            assert e.value.part == "metadata" and len(str(e.value).splitlines()) == 1


def test_a_batch_size_below_one_is_refused(exported, workdir_model):
    from chestattn_jax import bundle

    model = bundle.load(exported[0])
    image = phantom_arrays()[0]
    for predictor in (model, workdir_model):
        for call in (predictor.predict, predictor.embed):
            for size in (-1, 0):
                with pytest.raises(ValueError, match=f"batch_size={size}: give a positive"):
                    call(image, batch_size=size)


def test_a_refused_bundle_file_is_closed(exported, tmp_path, monkeypatch):
    from chestattn_jax import bundle_file

    opened = []

    class Recorded(zipfile.ZipFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    bad = tampered(
        exported[0], tmp_path / "v99.zip", _metadata_change(lambda m: m.update(format_version=99))
    )
    monkeypatch.setattr(bundle_file.zipfile, "ZipFile", Recorded)
    with pytest.raises(bundle_file.BundleError, match="format_version 99"):
        bundle_file.open_bundle(bad)
    assert len(opened) == 1 and opened[0].fp is None  # closed


def test_a_failed_write_leaves_no_partial_file(tiny_run, tmp_path, monkeypatch):
    from chestattn_jax.bundle import export

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    with pytest.raises(OSError, match="No space left"):
        export.export_bundle(tiny_run[1], tmp_path / "b.zip", platforms=("cpu",))
    assert list(tmp_path.iterdir()) == []
