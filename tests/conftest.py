"""Shared test helpers: tiny configs and the path of the real-data folder."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per test process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def load_config(name: str, arg: str | None = None):
    """Loads ``configs/NAME.py`` the way ``--config=configs/NAME.py:ARG`` does."""
    spec = importlib.util.spec_from_file_location(
        f"configs_{name}", REPO / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def proc_stat(pid) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...), or
    ``None`` if there is no such process (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def tiny_config(variant: str = "class", **train_overrides):
    """configs/synthetic.py shrunk to a one-block, 8-filter ResNet at 32 px and 5 classes."""
    config = load_config("synthetic", variant)
    config.data.image_size = 32
    # The five most frequent phantom findings: every one has positives in 256 images.
    config.data.classes = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule")
    config.data.synthetic.train_size = 256
    config.data.synthetic.validation_size = 40
    config.data.synthetic.test_size = 72
    config.model.num_filters = 8
    config.train.batch_size = 16
    config.train.num_steps = 24
    config.train.warmup_steps = 0
    config.train.schedule = "constant"
    config.train.learning_rate = 1e-2  # a tiny run must move within a few dozen steps
    config.train.log_every_steps = 4
    config.train.eval_every_steps = 12
    config.eval.batch_size = 32
    for k, v in train_overrides.items():
        config.train[k] = v
    return config


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Shares compiled executables between tests that build the same step again."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished 8-step run of the tiny class-based model (checkpoints at steps 4 and 8,
    evaluated), for tests that copy a workdir and then misuse or damage the copy."""
    from chestattn_jax import train

    config = tiny_config("class", num_steps=8, eval_every_steps=4)
    config.loss.class_weights = "none"
    workdir = tmp_path_factory.mktemp("tiny_run") / "w"
    train.train_and_evaluate(config, str(workdir))
    return config, workdir


def copy_workdir(src, dst):
    """A copy of a workdir, as a user would make with ``cp -r``."""
    import shutil

    shutil.copytree(src, dst)
    return dst


def config_overrides(config, base) -> list[str]:
    """The ``--config.A.B=V`` flags that turn ``base`` (the config file's config) into
    ``config``: a command line that runs exactly what a test built in Python."""

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if hasattr(value, "to_dict"):  # a ConfigDict group; plain dicts are values
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    def text(value):
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple | list | dict):
            return repr(value)
        return str(value)

    wanted, given = dict(leaves(config)), dict(leaves(base))
    if set(wanted) != set(given):
        raise ValueError(f"fields differ: {sorted(set(wanted) ^ set(given))}")
    return [f"--config.{k}={text(v)}" for k, v in wanted.items() if v != given[k]]


def set_fields(config, changes: dict):
    """Sets dotted fields of ``config`` in place (``{"data.std": 0.3}``); returns it."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    return config
