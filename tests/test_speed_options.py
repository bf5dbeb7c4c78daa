"""Issue 6's speed options change nothing they should not: the stage-4 skip, bfloat16
compute and the donated train step.

Compiles (tiny 32 px model): four forward-and-gradient functions for the skip, two
forwards and one train step for bfloat16.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACT_COMPILE, tiny_config

from chestattn_jax import sharding as shd
from chestattn_jax.losses import regularized_loss
from chestattn_jax.models import create_model
from chestattn_jax.steps import make_train_step
from chestattn_jax.train_state import create_optimizer, create_train_state

SIZE, BATCH = 32, 4


def _config(variant="class", **model):
    config = tiny_config(variant)
    for k, v in model.items():
        config.model[k] = v
    return config


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    k = len(tiny_config().data.classes)
    return dict(
        images=jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, 1)), jnp.float32),
        labels=jnp.asarray(rng.integers(0, 2, (BATCH, k)), jnp.float32),
        mask=jnp.ones((BATCH, k), jnp.float32),
    )


def _conv_operand_dtypes(fn, *args):
    """The operand dtypes of every convolution that tracing ``fn`` emits, nested ones too."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                found.append({v.aval.dtype for v in eqn.invars})
            for p in eqn.params.values():
                if hasattr(p, "jaxpr"):  # pjit, custom_jvp, remat: closed sub-jaxprs
                    walk(p.jaxpr)
                elif hasattr(p, "eqns"):
                    walk(p)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def _outputs(model, variables, data):
    """Train-mode logits, maps, new batch stats and gradients of Eq. 5; eval-mode logits."""

    def loss_fn(params):
        (logits, aux), updates = model.apply(
            {**variables, "params": params}, data["images"], train=True, mutable=["batch_stats"]
        )
        loss, _ = regularized_loss(
            logits,
            data["labels"],
            data["mask"],
            jnp.ones(logits.shape[1]),
            aux.get("class_log_attention"),
            0.1,
        )
        return loss, (logits, aux, updates["batch_stats"])

    (loss, (logits, aux, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"]
    )
    eval_logits, eval_aux = model.apply(variables, data["images"])
    return dict(
        loss=loss,
        logits=logits,
        maps=aux["attention"],
        log_w=aux.get("class_log_attention"),
        stats=stats,
        grads=grads,
        eval_logits=eval_logits,
        eval_maps=eval_aux["attention"],
        has_global="global" in aux,
    )


@pytest.fixture(scope="module", params=["image", "class"])
def skip_pair(request, data):
    """(variant, {skip: init}, {skip: outputs}, {skip: model}); both on the same variables."""
    models = {
        skip: create_model(_config(request.param, skip_unused_stage4=skip))
        for skip in (False, True)
    }
    variables = jax.jit(models[False].init)(jax.random.key(0), data["images"])
    # The skipping model's init, as shapes: it must build the same variables.
    shapes = jax.eval_shape(models[True].init, jax.random.key(0), data["images"])
    inits = {False: variables, True: shapes}
    # Compared bit for bit: compiled as XLA compiles them by default (conftest.EXACT_COMPILE).
    out = {
        skip: jax.jit(lambda v, d, m=m: _outputs(m, v, d), compiler_options=EXACT_COMPILE)(
            variables, data
        )
        for skip, m in models.items()
    }
    return request.param, inits, out, models


@pytest.mark.slow
def test_skip_is_exact(skip_pair):
    variant, _, out, _ = skip_pair
    full, skipped = out[False], out[True]
    for key in ("loss", "logits", "eval_logits", "log_w"):
        np.testing.assert_array_equal(full[key], skipped[key], err_msg=f"{variant}: {key}")
    for key in ("maps", "eval_maps"):
        assert full[key].keys() == skipped[key].keys()
        for gate in full[key]:
            np.testing.assert_array_equal(full[key][gate], skipped[key][gate], err_msg=gate)
    # The same gradients, exactly zero for stage 4 and the projections P either way.
    flat_full = jax.tree_util.tree_leaves_with_path(full["grads"])
    flat_skip = jax.tree.leaves(skipped["grads"])
    assert len(flat_full) == len(flat_skip)
    for (path, a), b in zip(flat_full, flat_skip, strict=True):
        name = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(a, b, err_msg=name)
        if "layer4" in name or "_P'" in name:
            assert not np.any(np.asarray(a)), name
    assert full["has_global"] and not skipped["has_global"]


@pytest.mark.slow
def test_skip_keeps_the_variable_layout(skip_pair):
    _, inits, out, _ = skip_pair
    # init builds stage 4 and every P_s under both settings.
    assert jax.tree.structure(inits[False]) == jax.tree.structure(inits[True])
    for a, b in zip(jax.tree.leaves(inits[False]), jax.tree.leaves(inits[True]), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    params = inits[True]["params"]
    assert "layer4_0" in params["backbone"] and "gate1_P" in params and "gate3_P" in params
    # Train mode returns every BatchNorm statistic; stage 4's stay as they were when skipped.
    full, skipped = out[False]["stats"], out[True]["stats"]
    assert jax.tree.structure(full) == jax.tree.structure(skipped)
    for path, x in jax.tree_util.tree_leaves_with_path(skipped):
        old = inits[False]["batch_stats"]
        for key in path:
            old = old[key.key]
        same = np.array_equal(x, old)
        assert same == ("layer4" in jax.tree_util.keystr(path)), jax.tree_util.keystr(path)


@pytest.mark.slow
def test_skip_removes_stage4_work(skip_pair, data):
    _, inits, _, models = skip_pair
    counts = {
        skip: len(
            _conv_operand_dtypes(lambda v, x, m=m: m.apply(v, x), inits[False], data["images"])
        )
        for skip, m in models.items()
    }
    # One bottleneck block per stage in the tiny model: 3 convs and a projection shortcut.
    assert counts[False] - counts[True] == 4, counts


@pytest.mark.parametrize(
    "variant, model",
    [
        ("resnet", {}),
        ("class", {"attention_norm": "sigmoid"}),
        ("class", {"compatibility": "additive"}),
        ("image", {"compatibility": "dp"}),
    ],
)
def test_skip_only_where_exact(variant, model, data):
    """Where g changes the outputs, stage 4 runs whatever the switch says."""
    m = create_model(_config(variant, skip_unused_stage4=True, **model))
    variables = jax.eval_shape(m.init, jax.random.key(0), data["images"])
    _, aux = jax.eval_shape(m.apply, variables, data["images"])
    assert "global" in aux


# ----------------------------------------------------------------------------- bfloat16


@pytest.fixture(scope="module")
def bf16_models(data):
    f32 = create_model(_config("class"))
    bf16 = create_model(_config("class", dtype="bfloat16"))
    variables = jax.jit(bf16.init)(jax.random.key(0), data["images"])
    return f32, bf16, variables


@pytest.mark.slow
def test_bfloat16_params_float32_outputs_close(bf16_models, data):
    f32, bf16, variables = bf16_models
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits32, aux32 = jax.jit(f32.apply)(variables, data["images"])
    logits16, aux16 = jax.jit(bf16.apply)(variables, data["images"])
    assert logits16.dtype == jnp.float32
    assert aux16["class_log_attention"].dtype == jnp.float32
    for maps in aux16["attention"].values():
        assert maps.dtype == jnp.float32
    assert not np.array_equal(logits16, logits32)  # bfloat16 really ran
    scale = float(np.abs(logits32).max())
    np.testing.assert_allclose(logits16, logits32, atol=0.03 * scale + 0.01)
    for name in aux32["attention"]:
        np.testing.assert_allclose(aux16["attention"][name], aux32["attention"][name], atol=0.01)


@pytest.mark.slow
def test_bfloat16_convolutions_run_in_bfloat16(bf16_models, data):
    """Every convolution of the backbone and the gates takes bfloat16 operands."""
    _, bf16, variables = bf16_models
    dtypes = _conv_operand_dtypes(
        lambda v, x: bf16.apply(v, x, train=True, mutable=["batch_stats"]),
        variables,
        data["images"],
    )
    assert len(dtypes) >= 12  # stem, 4 blocks x (3 + shortcut), 3 gates' B (and vmapped)
    assert all(d == {jnp.dtype(jnp.bfloat16)} for d in dtypes), dtypes


@pytest.mark.slow
def test_bfloat16_train_step_learns_and_donates():
    config = _config("class", dtype="bfloat16")
    mesh = shd.make_mesh(jax.devices()[:1])
    model, tx = create_model(config), create_optimizer(config.train)
    state = create_train_state(model, tx, jax.random.key(0), (SIZE, SIZE, 1), shd.replicated(mesh))
    k = len(config.data.classes)
    rng = np.random.default_rng(1)
    batch = shd.to_global(
        {
            "image": rng.integers(0, 256, (16, SIZE, SIZE, 1), dtype=np.uint8),
            "labels": rng.integers(0, 2, (16, k)).astype(np.int32),
            "mask": np.ones((16, k), np.int32),
        },
        shd.batch_sharded(mesh),
    )
    step = make_train_step(config, mesh, np.ones(k, np.float32))
    hlo = step.lower(state, batch).as_text()
    # No host round trip inside the step (callbacks lower to custom calls to the host).
    assert "callback" not in hlo.lower()
    losses = []
    for i in range(6):
        old = state
        state, metrics = step(state, batch)
        if i == 0:
            # The state was donated: its buffers now belong to the new state.
            assert all(x.is_deleted() for x in jax.tree.leaves(old.params))
        losses.append(metrics["loss"])
    losses = [float(x) for x in jax.device_get(losses)]
    assert step._cache_size() == 1
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.batch_stats)} == {jnp.dtype(jnp.float32)}
