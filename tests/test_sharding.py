"""The step sharded over 8 fake CPU devices equals the 1-device step."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from conftest import REPO, subprocess_env

from chestattn_jax import sharding as shd

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from conftest import tiny_config
    from chestattn_jax import sharding as shd
    from chestattn_jax.data.input_pipeline import create_source, train_dataset
    from chestattn_jax.losses import class_weights
    from chestattn_jax.models import create_model
    from chestattn_jax.steps import make_train_step
    from chestattn_jax.train_state import create_optimizer, create_train_state

    assert jax.device_count() == 8, jax.devices()
    config = tiny_config("class")
    # SGD: updates linear in the gradients. Adam divides a gradient by its own running size,
    # so where one is near zero the reduction order's rounding becomes a visible step
    # (3e-4 on a weight after 3 steps at lr 1e-3 on these phantoms), a property of Adam,
    # not of sharding.
    config.train.optimizer = "sgd"
    source = create_source(config, "train")
    weights = class_weights(source.positive_counts(), len(source), "paper")
    model, tx = create_model(config), create_optimizer(config.train)
    batches = iter(train_dataset(source, batch_size=16, seed=0))
    batches = [next(batches) for _ in range(3)]
    shape = (32, 32, 1)
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        mesh = shd.make_mesh(devices)
        state = create_train_state(model, tx, jax.random.key(0), shape, shd.replicated(mesh))
        step = make_train_step(config, mesh, weights)
        losses = []
        for b in batches:
            g = shd.to_global(b, shd.batch_sharded(mesh))
            if name == "eight":
                assert len(g["image"].addressable_shards) == 8
                assert g["image"].addressable_shards[0].data.shape[0] == 2
            state, metrics = step(state, g)
            losses.append(float(metrics["loss"]))
        assert step._cache_size() == 1, "the train step was traced more than once"
        assert all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == len(devices)
                   for x in jax.tree.leaves(state.params))
        results[name] = (jax.device_get(state.params), jax.device_get(state.batch_stats), losses)
    (p1, s1, l1), (p8, s8, l8) = results["one"], results["eight"]
    diff = lambda a, b: max(float(np.max(np.abs(x - y) / (np.abs(y) + 1e-3)))
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    try:
        shd.local_batch_size(12, "config.train.batch_size")
        error = None
    except ValueError as e:
        error = str(e)
    print("RESULT", json.dumps(dict(params=diff(p8, p1), stats=diff(s8, s1),
                                     loss1=l1, loss8=l8, error=error)))
    """
)


@pytest.mark.slow
def test_eight_device_step_matches_one_device():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env = subprocess_env({"XLA_FLAGS": flags.strip()})
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT ") :])
    assert r["params"] < 1e-4, r
    assert r["stats"] < 1e-4, r
    for a, b in zip(r["loss1"], r["loss8"], strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), r
    # The losses move, so equality is not two untouched initialisations.
    assert r["loss1"][0] != r["loss1"][-1]
    assert "config.train.batch_size=12" in r["error"] and "8 devices" in r["error"]


def test_batch_size_zero_is_called_not_positive():
    n = jax.device_count()
    with pytest.raises(ValueError) as e:
        shd.local_batch_size(0, "config.train.batch_size")
    assert str(e.value) == (
        f"config.train.batch_size=0: must be a positive multiple of the {n} "
        f"device{'s' if n > 1 else ''} in use, over which the global batch is split (e.g. {n})."
    )
    assert shd.local_batch_size(n, "config.train.batch_size") == n // jax.process_count()
