"""Fine-tuning from a trained model (config.model.init_from) and Model.embed."""

import copy

import jax
import numpy as np
import pytest
from conftest import tiny_config
from flax import traverse_util

import chestattn_jax
from chestattn_jax import init_from, train, validation
from chestattn_jax import sharding as shd
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.models import create_model
from chestattn_jax.train_state import create_optimizer, create_train_state
from chestattn_jax.trained_model import Model
from chestattn_jax.workdir import read_json


def flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(tree)), sep="/")


def fresh_state(config):
    """The train state a fresh run of ``config`` starts from, as train.train builds it."""
    mesh = shd.make_mesh()
    return create_train_state(
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )


def test_classes_are_matched_as_the_label_space_pairs_them():
    rows = init_from.matched_classes(NIH_CLASSES, CHEXPERT_CLASSES, "nih", "chexpert")
    got = {
        c: None if i is None else NIH_CLASSES[i]
        for c, i in zip(CHEXPERT_CLASSES, rows, strict=True)
    }
    shared = {"Cardiomegaly", "Edema", "Consolidation", "Pneumonia", "Atelectasis"}
    assert got == {
        **{c: None for c in CHEXPERT_CLASSES},
        **{c: c for c in shared | {"Pneumothorax"}},
        "Pleural Effusion": "Effusion",
    }
    # The phantoms (a data set the label space does not spell) pair by name.
    assert init_from.matched_classes(["Mass", "Effusion"], ["Effusion", "Hernia"]) == [1, None]


@pytest.mark.parametrize("variant", ["class", "image"])
def test_transfer_copies_the_heads_of_matched_classes(variant):
    """Brute force against the rule: every leaf outside the heads is the source's; head
    entries of matched classes are the source's rows (class axis 0 for the vmapped
    class heads, the last axis of the final Dense otherwise), the others untouched."""
    rng = np.random.default_rng(0)
    head = "class_heads" if variant == "class" else "classifier"
    shapes = {"backbone/conv/kernel": (3, 3, 1, 4), f"{head}/kernel": (5, 7, 1)}
    if variant == "image":
        shapes = {"backbone/conv/kernel": (3, 3, 1, 4), "classifier/kernel": (7, 4)}
        shapes["classifier/bias"] = (4,)
    source_k = 5 if variant == "class" else 3

    def tree(k):
        out = {}
        for key, shape in shapes.items():
            if key.startswith(head):
                shape = (k, *shape[1:]) if variant == "class" else (*shape[:-1], k)
            out[key] = rng.normal(size=shape).astype(np.float32)
        return traverse_util.unflatten_dict(out, sep="/")

    source, target = tree(source_k), tree(4)
    stats = {"backbone": {"bn": {"mean": rng.normal(size=4).astype(np.float32)}}}
    target_stats = {"backbone": {"bn": {"mean": np.zeros(4, np.float32)}}}
    rows = [2, None, 0, None]
    out = init_from.transfer(
        {"params": source, "batch_stats": stats},
        {"params": target, "batch_stats": target_stats},
        rows,
        variant,
    )
    got, src, dst = flat(out["params"]), flat(source), flat(target)
    np.testing.assert_array_equal(
        out["batch_stats"]["backbone"]["bn"]["mean"], stats["backbone"]["bn"]["mean"]
    )
    for key in got:
        if not key.startswith(head):
            np.testing.assert_array_equal(got[key], src[key])
            continue
        for j, i in enumerate(rows):
            if variant == "class":
                expected = dst[key][j] if i is None else src[key][i]
                np.testing.assert_array_equal(got[key][j], expected)
            else:
                expected = dst[key][..., j] if i is None else src[key][..., i]
                np.testing.assert_array_equal(got[key][..., j], expected)
    # A parameter of another shape outside the heads is refused, naming it.
    source["backbone"]["conv"]["kernel"] = np.zeros((3, 3, 1, 8), np.float32)
    with pytest.raises(ValueError, match=r"params/backbone/conv/kernel is \(3, 3, 1, 8\)"):
        init_from.transfer({"params": source}, {"params": target}, rows, variant)


# Three of tiny_run's classes (in another order) and two it does not have.
NEW_CLASSES = ("Mass", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Effusion")


@pytest.mark.slow
def test_init_from_fine_tunes_a_model_on_another_class_list(tiny_run, tmp_path, caplog):
    source_config, source_workdir = tiny_run
    config = tiny_config("class", num_steps=4, eval_every_steps=4)
    config.loss.class_weights = "none"
    config.data.classes = NEW_CLASSES
    config.model.init_from = str(source_workdir)
    assert validation.problems(config, "train", num_devices=1) == []

    # Step 0, as a fresh run builds it.
    source = init_from.load_source(config)
    best = read_json(source_workdir / "eval" / "metrics.json")["step"]
    assert source.step == best
    other = 4 if best == 8 else 8  # tiny_run checkpoints steps 4 and 8
    config.model.init_from = f"{source_workdir}:{other}"
    assert init_from.load_source(config).step == other
    config.model.init_from = f"{source_workdir}:latest"
    assert init_from.load_source(config).step == 8
    config.model.init_from = str(source_workdir)
    fresh = fresh_state(config)
    with caplog.at_level("INFO"):
        state, report = init_from.apply(config, fresh, source)
    assert report["copied"] == {
        "Mass": "Mass",
        "Atelectasis": "Atelectasis",
        "Effusion": "Effusion",
    }
    assert report["initialised"] == ["Pneumothorax", "Cardiomegaly"]
    assert "initialised fresh for Pneumothorax, Cardiomegaly" in caplog.text

    old = list(source_config.data.classes)
    rows = {j: old.index(c) for j, c in enumerate(NEW_CLASSES) if c in old}
    got, theirs, init = flat(state.params), flat(source.variables["params"]), flat(fresh.params)
    heads = [k for k in got if k.startswith("class_heads/")]
    assert heads and len(heads) < len(got)
    for key, value in got.items():
        if key not in heads:  # backbone, gates 1-2, the projections P_s
            np.testing.assert_array_equal(value, theirs[key])
            continue
        for j in range(len(NEW_CLASSES)):
            if j in rows:
                np.testing.assert_array_equal(value[j], theirs[key][rows[j]])
            else:  # fresh: this run's initialisation, none of the source's rows
                np.testing.assert_array_equal(value[j], init[key][j])
                assert all(not np.array_equal(value[j], row) for row in theirs[key])
    for key, value in flat(state.batch_stats).items():
        np.testing.assert_array_equal(value, flat(source.variables["batch_stats"])[key])
    assert all(not np.any(x) for x in jax.tree.leaves(state.opt_state))  # fresh moments

    # It trains, and the run records where it started from.
    workdir = tmp_path / "finetuned"
    trained = train.train(config, str(workdir))
    assert int(trained.step) == 4
    assert read_json(workdir / "config.json")["model"]["init_from"] == str(source_workdir)
    # A resumed run does not read init_from: its checkpoint wins.
    again = copy.deepcopy(config)
    again.model.init_from = str(tmp_path / "gone")
    resumed = train.train(again, str(workdir))
    np.testing.assert_array_equal(
        flat(resumed.params)["backbone/stem_conv/kernel"],
        flat(trained.params)["backbone/stem_conv/kernel"],
    )


@pytest.mark.slow
def test_init_from_a_bundle_starts_where_the_workdir_does(tiny_run, tmp_path):
    """A bundle file (python -m chestattn_jax.bundle export) carries what fine-tuning takes:
    the same step-0 state as the workdir it was exported from, and the source's model
    fields checked the same way."""
    from chestattn_jax.bundle import runtime
    from chestattn_jax.bundle.export import export_bundle

    _, source_workdir = tiny_run
    bundle = tmp_path / "model.zip"
    export_bundle(str(source_workdir), str(bundle), platforms=(runtime.local_platform(),))
    config = tiny_config("class")
    config.data.classes = NEW_CLASSES
    states = {}
    for name, value in (("workdir", source_workdir), ("bundle", bundle)):
        config.model.init_from = str(value)
        states[name], report = init_from.apply(config, fresh_state(config), None)
        assert report["copied"] == {c: c for c in ("Mass", "Atelectasis", "Effusion")}
    for part in ("params", "batch_stats"):
        a, b = flat(getattr(states["workdir"], part)), flat(getattr(states["bundle"], part))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    config.model.num_filters = 16
    with pytest.raises(ValueError, match=r"config.model.num_filters=16: .* has 8"):
        init_from.load_source(config)


def check_embeddings(model, images):
    """Model.embed's shapes, and each logit recomputed from them with the model's own
    classifier equal to predict's."""
    out, emb = model.predict(images), model.embed(images)
    n, k = len(images), len(model.classes)
    params = jax.tree.map(np.asarray, model.state.params)
    assert emb["classes"] == model.classes
    if model.variant == "resnet":
        assert emb["gate1"] is emb["gate2"] is emb["gate3"] is None
        dense = params["classifier"]
        logits = emb["global"].astype(np.float64) @ dense["kernel"] + dense["bias"]
    else:
        c = [emb[f"gate{s}"].shape[-1] for s in (1, 2, 3)]
        assert all(emb[f"gate{s}"].shape[:1] == (n,) for s in (1, 2))
        if model.variant == "image":
            assert emb["gate3"].shape == (n, c[2])
            dense = params["classifier"]
            features = np.concatenate([emb["gate1"], emb["gate2"], emb["gate3"]], -1)
            logits = features.astype(np.float64) @ dense["kernel"] + dense["bias"]
        else:
            assert emb["gate3"].shape == (n, k, c[2])
            dense = params["class_heads"]["branch"]["classifier"]
            logits = np.stack(
                [
                    np.concatenate([emb["gate1"], emb["gate2"], emb["gate3"][:, j]], -1)
                    @ dense["kernel"][j, :, 0]
                    + dense["bias"][j, 0]
                    for j in range(k)
                ],
                -1,
            )
    if model.config.model.skip_unused_stage4 and model.variant != "resnet":
        assert emb["global"] is None
    else:
        assert emb["global"].shape == (n, 8 * 4 * model.config.model.num_filters)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), out["probabilities"], atol=1e-5)
    # One image of a list gives its row of the stack.
    one = model.embed([images[1]])
    for name in ("global", "gate1", "gate2", "gate3"):
        if emb[name] is not None:
            np.testing.assert_allclose(one[name][0], emb[name][1], atol=1e-5)


IMAGES = np.random.default_rng(0).integers(0, 256, (3, 40, 36), dtype=np.uint8)


@pytest.mark.slow
def test_embed_of_a_trained_class_model(tiny_run):
    _, workdir = tiny_run
    check_embeddings(chestattn_jax.load(str(workdir)), IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["resnet", "image"])
def test_embed_of_the_other_variants(variant):
    config = tiny_config(variant)
    mesh = shd.make_mesh()
    check_embeddings(Model(config, fresh_state(config), 0, mesh), IMAGES)


@pytest.mark.parametrize("suffix", [":latest", ":5"])
def test_a_bundle_file_takes_no_checkpoint_suffix(tmp_path, suffix):
    """A bundle holds one model: ``FILE:latest`` is refused as it is read, naming the field,
    before the file itself is read."""
    (tmp_path / "m.zip").write_bytes(b"")
    config = tiny_config("class")
    config.model.init_from = f"{tmp_path / 'm.zip'}{suffix}"
    with pytest.raises(validation.ConfigError) as e:
        init_from.load_source(config)
    assert str(e.value) == (
        f"config.model.init_from='{tmp_path / 'm.zip'}{suffix}': {tmp_path / 'm.zip'} is a "
        f"bundle file, which holds one model: the checkpoint suffix '{suffix}' is for a "
        "workdir (give the file alone)."
    )
