"""The three variants: shapes, attention maps, parameter counts, Eq. 1 and Eq. 4 properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from chestattn_jax.models import AttentionGate, ChestAttentionNet, create_model

K = 5
SIZE = 64
TINY = dict(stage_sizes=(1, 1, 1, 1), num_filters=8)


def _init_apply(model, x):
    variables = jax.jit(lambda: model.init(jax.random.key(0), x))()
    apply = jax.jit(lambda v, x: model.apply(v, x))
    return variables, apply


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 1))


@pytest.fixture(scope="module")
def variants(images):
    """variant -> (variables, jitted apply, (logits, aux)) for each variant, built once."""
    out = {}
    for variant in ("resnet", "image", "class"):
        model = ChestAttentionNet(num_classes=K, variant=variant, **TINY)
        variables, apply = _init_apply(model, images)
        out[variant] = (variables, apply, apply(variables, images))
    return out


@pytest.mark.slow
def test_output_shapes(variants):
    # A one-block ResNet with 8 filters: stages have 32, 64, 128, 256 channels at
    # strides 4, 8, 16, 32.
    for variant, (_, _, (logits, aux)) in variants.items():
        assert logits.shape == (2, K) and logits.dtype == jnp.float32, variant
        assert aux["global"].shape == (2, 256)
    assert variants["resnet"][2][1]["attention"] == {}
    image_maps = variants["image"][2][1]["attention"]
    assert {k: v.shape for k, v in image_maps.items()} == {
        "gate1": (2, 16, 16),
        "gate2": (2, 8, 8),
        "gate3": (2, 4, 4),
    }
    class_aux = variants["class"][2][1]
    assert {k: v.shape for k, v in class_aux["attention"].items()} == {
        "gate1": (2, 16, 16),
        "gate2": (2, 8, 8),
        "gate3": (2, K, 4, 4),
    }
    assert class_aux["class_log_attention"].shape == (2, K, 4, 4)
    # The embeddings: each gate's attended feature (channels of stages 1-3).
    assert variants["resnet"][2][1]["pooled"] == {}
    assert {k: v.shape for k, v in variants["image"][2][1]["pooled"].items()} == {
        "gate1": (2, 32),
        "gate2": (2, 64),
        "gate3": (2, 128),
    }
    assert {k: v.shape for k, v in class_aux["pooled"].items()} == {
        "gate1": (2, 32),
        "gate2": (2, 64),
        "gate3": (2, K, 128),
    }


@pytest.mark.slow
def test_pooled_features_are_what_the_classifiers_read(variants):
    # Eq. 4: class j's logit is its classifier on concat(ĝ1, ĝ2, ĝ3_j); the image model's
    # one classifier reads concat(ĝ1, ĝ2, ĝ3). Recomputed from aux["pooled"] by hand.
    variables, _, (logits, aux) = variants["image"]
    p = variables["params"]["classifier"]
    feats = np.concatenate([aux["pooled"][f"gate{s}"] for s in (1, 2, 3)], -1)
    np.testing.assert_allclose(feats @ p["kernel"] + p["bias"], logits, rtol=1e-4, atol=1e-5)
    variables, _, (logits, aux) = variants["class"]
    p = variables["params"]["class_heads"]["branch"]["classifier"]
    pooled = aux["pooled"]
    for j in range(K):
        feats = np.concatenate([pooled["gate1"], pooled["gate2"], pooled["gate3"][:, j]], -1)
        expected = feats @ p["kernel"][j][:, 0] + p["bias"][j][0]
        np.testing.assert_allclose(expected, logits[:, j], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_softmax_maps_are_distributions(variants):
    for variant in ("image", "class"):
        for name, maps in variants[variant][2][1]["attention"].items():
            sums = np.asarray(maps).sum(axis=(-2, -1))
            np.testing.assert_allclose(sums, 1.0, rtol=1e-5, err_msg=f"{variant}/{name}")
            assert np.all(np.asarray(maps) >= 0)


@pytest.mark.slow
def test_class_log_attention_matches_class_maps(variants):
    aux = variants["class"][2][1]
    log_w = np.asarray(aux["class_log_attention"]).reshape(2, K, -1)
    p = np.exp(log_w - log_w.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(p.reshape(2, K, 4, 4), aux["attention"]["gate3"], atol=1e-6)


@pytest.mark.slow
def test_sigmoid_maps_are_gates(images):
    model = ChestAttentionNet(num_classes=K, variant="class", normalisation="sigmoid", **TINY)
    variables, apply = _init_apply(model, images)
    _, aux = apply(variables, images)
    for maps in aux["attention"].values():
        assert np.all((np.asarray(maps) > 0) & (np.asarray(maps) < 1))


@pytest.mark.slow
def test_class_heads_are_vmapped(variants):
    heads = variants["class"][0]["params"]["class_heads"]["branch"]
    assert heads["gate"]["B"]["kernel"].shape == (K, 1, 1, 128, 16)
    assert heads["gate"]["A"].shape == (K, 16, 1)
    assert heads["classifier"]["kernel"].shape == (K, 32 + 64 + 128, 1)
    # Independent initialisation per class, not K copies of one gate.
    b = np.asarray(heads["gate"]["B"]["kernel"])
    assert not np.allclose(b[0], b[1])


@pytest.mark.parametrize("k", [14, 11])
def test_parameter_ratio_on_resnet50(k):
    def count(variant):
        model = ChestAttentionNet(num_classes=k, variant=variant)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 1)))
        return sum(x.size for x in jax.tree.leaves(shapes["params"]))

    image, klass, resnet = count("image"), count("class"), count("resnet")
    assert 23_000_000 < resnet < 24_000_000  # ResNet-50 without its 1000-way head
    assert 1.0 < klass / image < 1.01
    # The only extra parameters are k-1 more copies of B_3 (1024 x 16) and A_3 (16).
    assert klass - image == (k - 1) * (1024 * 16 + 16)


@pytest.mark.slow
def test_pc_maps_do_not_depend_on_g():
    rng = np.random.default_rng(0)
    local = jnp.asarray(rng.normal(size=(2, 6, 6, 12)), jnp.float32)
    g1 = jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)
    g2 = g1 + 3.0 * jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)
    for compatibility, invariant in (("pc", True), ("additive", False), ("dp", False)):
        gate = AttentionGate(attention_dim=16, compatibility=compatibility)
        params = gate.init(jax.random.key(0), local, g1)
        m1, p1, _ = gate.apply(params, local, g1)
        m2, p2, _ = gate.apply(params, local, g2)
        if invariant:
            np.testing.assert_allclose(m1, m2, atol=1e-6)
            np.testing.assert_allclose(p1, p2, atol=1e-5)
        else:
            assert not np.allclose(m1, m2, atol=1e-4), compatibility


@pytest.mark.slow
def test_pc_maps_ignore_stage4_in_full_model(variants, images):
    """Changing stage 4 changes g but, under pc + softmax, no attention map."""
    variables, apply, (_, aux) = variants["class"]
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 1.5 + 0.1 if "layer4" in jax.tree_util.keystr(path) else x,
        variables["params"],
    )
    _, aux2 = apply({**variables, "params": params}, images)
    assert not np.allclose(aux["global"], aux2["global"])
    for name in aux["attention"]:
        # Equal up to float32 rounding of A . g', which softmax cancels exactly in real numbers.
        np.testing.assert_allclose(
            aux["attention"][name], aux2["attention"][name], rtol=1e-3, atol=1e-6
        )


@pytest.mark.slow
def test_pc_softmax_sends_no_gradient_to_stage4_or_p(variants, images):
    """Under pc + softmax, A . g' is the same at every position and the softmax cancels it:
    g cannot change any output, so its gradient is exactly 0."""
    variables, _, _ = variants["class"]
    model = ChestAttentionNet(num_classes=K, variant="class", **TINY)

    def loss(params):
        logits, aux = model.apply({**variables, "params": params}, images)
        return jnp.sum(logits**2) + jnp.sum(aux["class_log_attention"] ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        if "layer4" in name or "_P" in name:
            assert not np.any(np.asarray(g)), name
        elif "stem_conv" in name or "B" in name:
            assert np.any(np.asarray(g)), name


@pytest.mark.slow
def test_class_independence(variants, images):
    variables, apply, (logits, _) = variants["class"]
    j = 2
    params = jax.tree.map(lambda x: x.at[j].add(0.5), variables["params"]["class_heads"])
    new_params = {**variables["params"], "class_heads": params}
    logits2, _aux2 = apply({**variables, "params": new_params}, images)
    changed = ~np.isclose(np.asarray(logits), np.asarray(logits2), rtol=0, atol=0)
    assert changed[:, j].all()
    np.testing.assert_array_equal(
        np.delete(np.asarray(logits), j, 1), np.delete(np.asarray(logits2), j, 1)
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("variant", "klass", "resnet, image, class"),
        ("compatibility", "cosine", "pc, additive, dp"),
        ("attention_norm", "relu", "softmax, sigmoid"),
        ("dtype", "int8", "float32, bfloat16, float16"),
    ],
)
def test_bad_model_names(field, value, message):
    """create_model applies the model's config rules (the ones validation applies)."""
    config = tiny_config()
    config.model[field] = value
    expected = rf"config\.model\.{field}={value!r}: expected one of {message}"
    with pytest.raises(ValueError, match=expected):
        create_model(config)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_outputs(images):
    model = ChestAttentionNet(num_classes=K, variant="class", dtype=jnp.bfloat16, **TINY)
    variables, apply = _init_apply(model, images)
    logits, aux = apply(variables, images)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert logits.dtype == jnp.float32
    assert aux["attention"]["gate3"].dtype == jnp.float32


def test_gates_one_stage_later_on_resnet50():
    """gate_stages=(2, 3, 4): the gates see stages 2-4 (strides 8, 16, 32), gate 3 and the
    class heads stage 4's 2048 channels, and stage 4 is never skipped."""
    k = 14
    model = ChestAttentionNet(
        num_classes=k, variant="class", gate_stages=(2, 3, 4), skip_unused_stage4=True
    )
    assert not model.stage4_unused
    x = jnp.zeros((1, 224, 224, 1))
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    (logits, aux) = jax.eval_shape(lambda v: model.apply(v, x), params)
    assert logits.shape == (1, k) and aux["global"].shape == (1, 2048)
    assert aux["attention"]["gate1"].shape == (1, 28, 28)
    assert aux["attention"]["gate2"].shape == (1, 14, 14)
    assert aux["attention"]["gate3"].shape == (1, k, 7, 7)
    heads = params["params"]["class_heads"]["branch"]
    assert heads["gate"]["B"]["kernel"].shape == (k, 1, 1, 2048, 16)  # one per class
    # The classifier reads the attended stage 2, 3 and 4 features: 512 + 1024 + 2048.
    assert heads["classifier"]["kernel"].shape == (k, 512 + 1024 + 2048, 1)
    default = ChestAttentionNet(num_classes=k, variant="class", skip_unused_stage4=True)
    assert default.stage4_unused  # (1, 2, 3): stage 4 is skipped under pc + softmax


def test_gate_stages_reach_the_model_from_the_config(images):
    config = tiny_config("image")
    config.model.gate_stages = (2, 3, 4)
    model = create_model(config)
    x = jnp.zeros((1, 64, 64, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    _, aux = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert aux["attention"]["gate3"].shape == (1, 2, 2)  # stride 32 at 64 px
    for bad in [(1, 2), (3, 2, 1), (0, 1, 2), (2, 3, 5)]:
        with pytest.raises(ValueError, match=r"config.model.gate_stages"):
            jax.eval_shape(
                ChestAttentionNet(num_classes=K, gate_stages=bad, **TINY).init,
                jax.random.key(0),
                jnp.zeros((1, 32, 32, 1)),
            )
