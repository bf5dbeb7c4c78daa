"""The command line: overrides, modes and the errors a user sees."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

TINY_FLAGS = [
    "--config.data.image_size=32",
    "--config.data.synthetic.train_size=64",
    "--config.data.synthetic.validation_size=16",
    "--config.data.synthetic.test_size=24",
    "--config.model.num_filters=8",
    "--config.loss.class_weights=none",  # 64 images: rare phantom classes have no positives
    "--config.train.batch_size=8",
    "--config.train.num_steps=4",
    "--config.train.log_every_steps=2",
    "--config.train.eval_every_steps=4",
    "--config.eval.batch_size=16",
]


def run_main(*args, cache_dir=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    return subprocess.run(
        [sys.executable, "-m", "chestattn_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_then_evaluate_from_the_command_line(tmp_path):
    workdir = tmp_path / "w"
    proc = run_main(
        "--config=configs/synthetic.py:image",
        f"--workdir={workdir}",
        *TINY_FLAGS,
        cache_dir=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps/s" in proc.stderr and "images/s" in proc.stderr and "ETA" in proc.stderr
    with open(workdir / "eval" / "metrics.json") as f:
        trained = json.load(f)
    assert trained["variant"] == "image" and trained["step"] == 4
    os.remove(workdir / "eval" / "metrics.json")
    proc = run_main(
        "--config=configs/synthetic.py:image",
        f"--workdir={workdir}",
        *TINY_FLAGS,
        "--mode=evaluate",
        cache_dir=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "eval" / "metrics.json") as f:
        assert json.load(f) == trained


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config=configs/synthetic.py", "--config.train.bogus_key=1"],
            "--config.train.bogus_key: the config has no field 'bogus_key'",
        ),
        (["--config=configs/synthetic.py:klass"], "Unknown config argument 'klass'"),
        (
            ["--config=configs/synthetic.py", "--config.model.variant=klass"],
            "Unknown model variant (config.model.variant) 'klass'",
        ),
        (
            ["--config=configs/synthetic.py", "--config.model.compatibility=cosine"],
            "compatibility (config.model.compatibility) 'cosine'",
        ),
        (
            ["--config=configs/synthetic.py", "--config.loss.class_weights=balanced"],
            "class-weight scheme 'balanced' (config.loss.class_weights)",
        ),
        (["--config=configs/nih.py"], "config.data.data_dir is not set"),
        (
            ["--config=configs/chexpert.py", "--config.data.data_dir=/nonexistent"],
            "python -m chestattn_jax.data.prepare --dataset=chexpert",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, args, message):
    proc = run_main(*args, f"--workdir={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


def test_workdir_that_is_a_file_from_the_command_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    proc = run_main("--config=configs/synthetic.py", f"--workdir={path}", "--mode=evaluate")
    assert proc.returncode != 0
    assert f"--workdir {str(path)!r} exists and is not a directory" in proc.stderr
