"""torchvision ResNet state dicts into the Flax backbone, without torch.

State dicts are built in numpy with torchvision's key names and shapes (generated here from
torchvision's Bottleneck layout, independently of the converter) and written with
safetensors. Values are distinct random numbers, so every backbone leaf can be traced back
to the one tensor it came from.
"""

import importlib.util
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from conftest import tiny_config
from safetensors.numpy import load_file, save_file

from chestattn_jax import sharding as shd
from chestattn_jax.config import get_base_config
from chestattn_jax.models import ChestAttentionNet, create_model
from chestattn_jax.models.convert import (
    ConversionError,
    load_pretrained,
    main,
    maybe_load_pretrained,
    read_state_dict,
    replace_backbone,
)
from chestattn_jax.train_state import create_optimizer, create_train_state

TINY_STAGES = (1, 2, 1, 1)
WIDTH = 4
SIZE = 32
HAS_TORCH = importlib.util.find_spec("torch") is not None


def torchvision_shapes(stage_sizes, width=64, block="bottleneck", num_classes=10):
    """Key -> shape of torchvision's ``ResNet(Bottleneck or BasicBlock, stage_sizes)``."""
    shapes = {"conv1.weight": (width, 3, 7, 7)}

    def bn(prefix, c):
        shapes.update({f"{prefix}.{n}": (c,) for n in ("weight", "bias")})
        shapes.update({f"{prefix}.{n}": (c,) for n in ("running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", width)
    inplanes = width
    expansion = 4 if block == "bottleneck" else 1
    for i, blocks in enumerate(stage_sizes):
        planes = width * 2**i
        for j in range(blocks):
            p = f"layer{i + 1}.{j}"
            if block == "bottleneck":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                for k, c in (("bn1", planes), ("bn2", planes), ("bn3", planes * 4)):
                    bn(f"{p}.{k}", c)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn1", planes)
                bn(f"{p}.bn2", planes)
            # torchvision adds a projection where the stride or the width changes.
            if j == 0 and (i > 0 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"] = (num_classes, inplanes)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes, seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = np.array(7, np.int64)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + np.abs(rng.standard_normal(s, dtype=np.float32))
        else:
            sd[k] = rng.standard_normal(s, dtype=np.float32)
    return sd


def model_variables(stage_sizes=TINY_STAGES, width=WIDTH, channels=3, size=SIZE, variant="class"):
    """Shapes of ChestAttentionNet's params and batch_stats (jax.eval_shape: nothing runs)."""
    model = ChestAttentionNet(
        num_classes=3, variant=variant, stage_sizes=stage_sizes, num_filters=width
    )
    x = jnp.zeros((1, size, size, channels))
    return model, jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def flat(tree):
    return {
        "/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def expected_key(collection, path):
    """The torchvision key a backbone leaf should come from, by renaming rules."""
    key = re.sub(r"^layer(\d)_(\d+)/", r"layer\1.\2/", path)
    key = key.replace("stem_conv", "conv1").replace("stem_bn", "bn1")
    key = key.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}
    leaf |= {"mean": "running_mean", "var": "running_var"}
    *mods, last = key.split("/")
    return ".".join([*mods, leaf[last]])


@pytest.fixture()
def tiny_file(tmp_path):
    sd = random_state_dict(torchvision_shapes(TINY_STAGES, WIDTH))
    path = tmp_path / "tiny.safetensors"
    save_file(sd, str(path))
    return sd, str(path)


def test_every_tensor_lands_in_its_place(tiny_file):
    sd, path = tiny_file
    _, variables = model_variables()
    params, stats, report = replace_backbone(
        variables["params"], variables["batch_stats"], read_state_dict(path), source=path
    )
    # Trace each backbone leaf back to its source tensor by value (all values are distinct).
    by_first_value = {
        v.reshape(-1)[0].item(): k for k, v in sd.items() if v.dtype == np.float32 and v.ndim
    }
    seen = []
    for collection, tree in (("params", params), ("batch_stats", stats)):
        for path_, leaf in flat(tree["backbone"]).items():
            assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32, path_
            torch_layout = leaf.transpose(3, 2, 0, 1) if leaf.ndim == 4 else leaf
            source = by_first_value[torch_layout.reshape(-1)[0].item()]
            assert source == expected_key(collection, path_), (collection, path_, source)
            np.testing.assert_array_equal(torch_layout, sd[source], err_msg=path_)
            seen.append(source)
    wanted = [k for k in sd if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert sorted(seen) == sorted(wanted)  # each tensor used exactly once
    assert report.loaded == sorted(wanted)
    assert report.ignored == ["fc.bias", "fc.weight", "*.num_batches_tracked"]
    assert report.stage_sizes == TINY_STAGES and report.stem == "as is"
    assert path in str(report)
    # The heads are left exactly as they were.
    for name in variables["params"]:
        if name != "backbone":
            assert params[name] is variables["params"][name]


def test_conv_kernels_are_hwio(tiny_file):
    sd = tiny_file[0]
    _, variables = model_variables()
    params, _, _ = replace_backbone(variables["params"], variables["batch_stats"], sd)
    stem = params["backbone"]["stem_conv"]["kernel"]
    assert stem.shape == (7, 7, 3, WIDTH)
    # kernel[h, w, i, o] == weight[o, i, h, w]; h != w catches a swapped spatial pair.
    assert stem[1, 5, 2, 3] == sd["conv1.weight"][3, 2, 1, 5]
    assert stem[5, 1, 2, 3] == sd["conv1.weight"][3, 2, 5, 1]
    conv2 = params["backbone"]["layer2_0"]["conv2"]["kernel"]
    assert conv2[0, 2, 1, 3] == sd["layer2.0.conv2.weight"][3, 1, 0, 2]


def test_grayscale_stem_sums_rgb_filters(tiny_file):
    sd, _ = tiny_file
    _, variables = model_variables(channels=1)
    params, _, report = replace_backbone(variables["params"], variables["batch_stats"], sd)
    stem = params["backbone"]["stem_conv"]["kernel"]
    assert stem.shape == (7, 7, 1, WIDTH)
    np.testing.assert_allclose(
        stem[:, :, 0, :], sd["conv1.weight"].sum(axis=1).transpose(1, 2, 0), rtol=1e-6
    )
    assert report.stem == "summed RGB -> 1"


@pytest.mark.slow
def test_grayscale_model_equals_rgb_model_on_repeated_image(tiny_file):
    sd, _ = tiny_file
    x = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 1))
    heads, outputs = None, []
    for channels in (1, 3):
        model, variables = model_variables(channels=channels, variant="resnet")
        params, stats, _ = replace_backbone(variables["params"], variables["batch_stats"], sd)
        if heads is None:  # the heads do not depend on the input channels: share them
            leaves, treedef = jax.tree.flatten({k: v for k, v in params.items() if k != "backbone"})
            keys = jax.random.split(jax.random.key(2), len(leaves))
            heads = treedef.unflatten(
                [0.1 * jax.random.normal(k, s.shape) for k, s in zip(keys, leaves, strict=True)]
            )
        logits, aux = jax.jit(model.apply)(
            {"params": {**params, **heads}, "batch_stats": stats}, jnp.repeat(x, channels, -1)
        )
        outputs.append((np.asarray(logits), np.asarray(aux["global"])))
    gray, rgb = outputs
    assert np.abs(rgb[0]).max() > 0 and np.abs(rgb[1]).max() > 0
    np.testing.assert_allclose(gray[1], rgb[1], rtol=1e-4, atol=1e-4 * np.abs(rgb[1]).max())
    np.testing.assert_allclose(gray[0], rgb[0], rtol=1e-4, atol=1e-4 * np.abs(rgb[0]).max())


def test_resnet50_shapes(tmp_path):
    """Every ResNet-50 leaf (3, 4, 6, 3) converts, shapes from jax.eval_shape only."""
    sd = random_state_dict(torchvision_shapes((3, 4, 6, 3), 64, num_classes=1000), seed=3)
    path = str(tmp_path / "resnet50.safetensors")
    save_file(sd, path)
    _, variables = model_variables((3, 4, 6, 3), 64, channels=1, size=224)
    params, stats, report = replace_backbone(
        variables["params"], variables["batch_stats"], read_state_dict(path), source=path
    )
    for old, new in (
        (variables["params"]["backbone"], params["backbone"]),
        (variables["batch_stats"]["backbone"], stats["backbone"]),
    ):
        old, new = flat(old), flat(new)
        assert old.keys() == new.keys()
        for k in old:
            assert isinstance(new[k], np.ndarray), k
            assert (new[k].shape, new[k].dtype) == (old[k].shape, old[k].dtype), k
    assert len(report.loaded) == 53 + 53 * 4  # 53 convs, each followed by a BatchNorm
    assert report.stage_sizes == (3, 4, 6, 3) and report.stem == "summed RGB -> 1"
    np.testing.assert_array_equal(
        params["backbone"]["layer4_2"]["conv3"]["kernel"],
        sd["layer4.2.conv3.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        stats["backbone"]["layer3_5"]["bn3"]["var"],
        sd["layer3.5.bn3.running_var"],
    )


def _convert_file(tmp_path, sd, stages=TINY_STAGES):
    path = str(tmp_path / "bad.safetensors")
    save_file(sd, path)
    _, variables = model_variables(stages)
    return path, lambda: replace_backbone(
        variables["params"], variables["batch_stats"], read_state_dict(path), source=path
    )


def test_missing_key_is_named(tmp_path, tiny_file):
    sd = dict(tiny_file[0])
    del sd["layer2.0.bn2.running_var"]
    path, convert = _convert_file(tmp_path, sd)
    with pytest.raises(ConversionError, match=r"missing key 'layer2\.0\.bn2\.running_var'") as e:
        convert()
    assert path in str(e.value) and "layer2_0/bn2/var" in str(e.value)


def test_wrong_shape_is_named(tmp_path, tiny_file):
    sd = dict(tiny_file[0])
    sd["layer1.0.conv2.weight"] = np.zeros((WIDTH, WIDTH, 3, 1), np.float32)
    path, convert = _convert_file(tmp_path, sd)
    with pytest.raises(
        ConversionError, match=r"layer1\.0\.conv2\.weight has shape \(4, 4, 3, 1\)"
    ) as e:
        convert()
    assert path in str(e.value) and "(4, 4, 3, 3)" in str(e.value)
    sd = dict(tiny_file[0])
    sd["layer3.0.bn1.running_mean"] = np.zeros((WIDTH,), np.float32)
    _, convert = _convert_file(tmp_path, sd)
    with pytest.raises(ConversionError, match=r"layer3\.0\.bn1\.running_mean has shape \(4,\)"):
        convert()


def test_half_precision_files_convert(tmp_path, tiny_file):
    """bfloat16 weights (safetensors.numpy reads them as ml_dtypes.bfloat16) load as float32."""
    sd = {
        k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v
        for k, v in tiny_file[0].items()
    }
    sd["bn1.running_var"] = sd["bn1.running_var"].astype(np.float16)
    path, convert = _convert_file(tmp_path, sd)
    params, stats, _ = convert()
    assert read_state_dict(path)["conv1.weight"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(
        params["backbone"]["layer1_0"]["conv2"]["kernel"],
        sd["layer1.0.conv2.weight"].astype(np.float32).transpose(2, 3, 1, 0),
    )
    assert stats["backbone"]["stem_bn"]["var"].dtype == np.float32
    sd["layer1.0.bn1.weight"] = np.arange(WIDTH)
    _, convert = _convert_file(tmp_path, sd)
    with pytest.raises(ConversionError, match=r"layer1\.0\.bn1\.weight has dtype int64"):
        convert()


def test_basic_block_resnet_is_rejected(tmp_path):
    sd = random_state_dict(torchvision_shapes((2, 2, 2, 2), 64, block="basic"))
    path, convert = _convert_file(tmp_path, sd, stages=(2, 2, 2, 2))
    with pytest.raises(ConversionError, match="basic-block ResNet") as e:
        convert()
    assert path in str(e.value) and "bottleneck" in str(e.value)


def test_not_a_resnet_is_rejected(tmp_path):
    _, convert = _convert_file(tmp_path, {"encoder.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ConversionError, match="not a torchvision ResNet state dict"):
        convert()


def test_other_depth_needs_matching_stage_sizes(tmp_path):
    sd = random_state_dict(torchvision_shapes((1, 3, 1, 1), WIDTH))
    _, convert = _convert_file(tmp_path, sd)
    with pytest.raises(ConversionError, match=r"stage sizes \(1, 3, 1, 1\).*\(1, 2, 1, 1\)"):
        convert()
    # The same file loads into a model built with its stage sizes.
    _, convert = _convert_file(tmp_path, sd, stages=(1, 3, 1, 1))
    assert convert()[2].stage_sizes == (1, 3, 1, 1)


def test_unknown_key_is_rejected(tmp_path, tiny_file):
    sd = dict(tiny_file[0])
    sd["layer1.0.se.fc1.weight"] = np.zeros((2, 2), np.float32)
    _, convert = _convert_file(tmp_path, sd)
    with pytest.raises(ConversionError, match=r"'layer1\.0\.se\.fc1\.weight' has no place"):
        convert()


def test_model_without_stage4_leaves_it_out(tiny_file):
    sd, _ = tiny_file
    _, variables = model_variables()
    drop = lambda tree: {
        **tree,
        "backbone": {k: v for k, v in tree["backbone"].items() if not k.startswith("layer4")},
    }
    params, _, report = replace_backbone(
        drop(variables["params"]), drop(variables["batch_stats"]), sd
    )
    assert not any(k.startswith("layer4") for k in params["backbone"])
    assert "layer4.* (the model has no stage 4)" in report.ignored
    assert not any(k.startswith("layer4") for k in report.loaded)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        read_state_dict(tmp_path / "nowhere.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(ConversionError, match=r"junk\.safetensors"):
        read_state_dict(junk)
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"")
    with pytest.raises(ConversionError, match=r"w\.npz.*\.safetensors"):
        read_state_dict(npz)


@pytest.mark.skipif(HAS_TORCH, reason="checks the message shown where torch is missing")
def test_pth_without_torch_says_so(tmp_path):
    pth = tmp_path / "resnet50.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(ConversionError, match=r"resnet50\.pth.*needs torch"):
        read_state_dict(pth)


def test_pth_with_torch(tmp_path, tiny_file):
    torch = pytest.importorskip("torch")
    sd = tiny_file[0]
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(tensors, plain)
    # A training checkpoint of a DataParallel model: {"state_dict": {"module.conv1...": ...}}.
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()}, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        got = read_state_dict(path)
        assert got.keys() == sd.keys()
        for k in sd:
            np.testing.assert_array_equal(got[k], sd[k], err_msg=k)
    out = tmp_path / "converted.safetensors"
    assert main([f"--in={plain}", f"--out={out}"]) == 0
    got = load_file(str(out))
    assert got.keys() == sd.keys()
    np.testing.assert_array_equal(got["layer2.1.conv2.weight"], sd["layer2.1.conv2.weight"])
    pickle = tmp_path / "pickle.pth"
    torch.save({"fn": object}, pickle)  # not loadable with weights_only=True
    with pytest.raises(ConversionError, match=r"pickle\.pth"):
        read_state_dict(pickle)


def test_cli_checks_and_copies(tmp_path, tiny_file, capsys):
    sd, path = tiny_file
    out = tmp_path / "copy.safetensors"
    assert main([f"--in={path}", f"--out={out}"]) == 0
    assert "ResNet stages (1, 2, 1, 1)" in capsys.readouterr().out
    got = load_file(str(out))
    assert got.keys() == sd.keys()
    with pytest.raises(SystemExit):
        main([f"--in={path}", f"--out={tmp_path / 'x.pth'}"])


@pytest.fixture(scope="module")
def fresh_state():
    """The state train.py creates for the tiny test config (the compiled init is shared with
    the other tests through the compilation cache)."""
    config = tiny_config("class")
    c = config.data
    return config, create_train_state(
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (c.image_size, c.image_size, c.channels),
        shd.replicated(shd.make_mesh()),
    )


@pytest.fixture(scope="module")
def state_file(fresh_state, tmp_path_factory):
    m = fresh_state[0].model
    sd = random_state_dict(torchvision_shapes(m.stage_sizes, m.num_filters), seed=5)
    path = str(tmp_path_factory.mktemp("weights") / "tiny.safetensors")
    save_file(sd, path)
    return sd, path


@pytest.mark.slow
def test_load_pretrained_train_state(state_file, fresh_state):
    sd, path = state_file
    config, fresh = fresh_state
    state = load_pretrained(fresh, path)
    stem = np.asarray(state.params["backbone"]["stem_conv"]["kernel"])
    np.testing.assert_allclose(stem[:, :, 0], sd["conv1.weight"].sum(1).transpose(1, 2, 0), 1e-6)
    np.testing.assert_array_equal(
        state.batch_stats["backbone"]["layer1_0"]["bn3"]["mean"], sd["layer1.0.bn3.running_mean"]
    )
    heads = lambda p: {k: v for k, v in p.items() if k != "backbone"}
    jax.tree.map(np.testing.assert_array_equal, heads(state.params), heads(fresh.params))
    # Same tree structure, shapes and placement as before, so the jitted step and the
    # checkpointer take it unchanged; Adam starts from zero moments.
    for new, old in ((state.params, fresh.params), (state.opt_state, fresh.opt_state)):
        assert jax.tree.structure(new) == jax.tree.structure(old)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
            assert isinstance(a, jax.Array) and a.sharding == b.sharding
            assert (a.shape, a.dtype) == (b.shape, b.dtype)
    adam = state.opt_state[0]
    assert all(not np.any(x) for x in jax.tree.leaves((adam.mu, adam.nu)))
    assert int(adam.count) == 0 and int(state.step) == 0
    # One Adam step with unit gradients moves every weight by the learning rate.
    grads = jax.tree.map(jnp.ones_like, state.params)
    stepped = jax.jit(lambda s, g: s.apply_gradients(g, s.batch_stats))(state, grads)
    moved = np.asarray(stepped.params["backbone"]["stem_conv"]["kernel"]) - stem
    np.testing.assert_allclose(moved, -config.train.learning_rate, rtol=1e-3)


@pytest.mark.slow
def test_load_pretrained_only_into_a_fresh_state(state_file, fresh_state):
    fresh = fresh_state[1]
    with pytest.raises(ValueError, match="step 0"):
        load_pretrained(fresh.replace(step=fresh.step + 1), state_file[1])


@pytest.mark.slow
def test_pretrained_is_off_by_default(fresh_state):
    fresh = fresh_state[1]
    assert get_base_config().model.pretrained == ""
    assert maybe_load_pretrained(fresh, "") is fresh
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        maybe_load_pretrained(fresh, "missing.safetensors")


@pytest.mark.slow
def test_training_starts_from_the_pretrained_backbone(state_file, tmp_path):
    """config.model.pretrained reaches train.py: at learning rate 0 the checkpointed
    backbone is the converted file's."""
    from chestattn_jax import train
    from chestattn_jax.checkpointing import Checkpointer

    sd, path = state_file
    config = tiny_config("class", num_steps=4, log_every_steps=4, eval_every_steps=4)
    config.train.learning_rate = 0.0
    config.model.pretrained = path
    config.eval.bootstrap_draws = 0
    workdir = str(tmp_path / "w")
    train.train_and_evaluate(config, workdir)
    checkpointer = Checkpointer(workdir, read_only=True)
    state, _ = checkpointer.restore(checkpointer.latest_step(), load_pretrained_template(config))
    checkpointer.close()
    stem = np.asarray(state.params["backbone"]["stem_conv"]["kernel"])
    np.testing.assert_allclose(stem[:, :, 0], sd["conv1.weight"].sum(1).transpose(1, 2, 0), 1e-6)


def load_pretrained_template(config):
    c = config.data
    return create_train_state(
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (c.image_size, c.image_size, c.channels),
        shd.replicated(shd.make_mesh()),
    )
