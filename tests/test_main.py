"""The command line: overrides, modes and the errors a user sees."""

import json
import os

import pytest
from conftest import tiny_config, tiny_flags

# Every test here starts the command line in a process of its own.
pytestmark = pytest.mark.slow


def test_train_then_evaluate_from_the_command_line(tmp_path, cli):
    workdir = tmp_path / "w"
    # The tiny image-based model for 4 steps, logged every 2 and validated at the end (the
    # steps test_experiment's image cells compile: the session's cache holds them).
    config = tiny_config("image", num_steps=4, log_every_steps=2, eval_every_steps=4)
    config.loss.class_weights = "none"
    flags = tiny_flags(config)
    proc = cli(f"--workdir={workdir}", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps/s" in proc.stderr and "images/s" in proc.stderr and "ETA" in proc.stderr
    with open(workdir / "eval" / "metrics.json") as f:
        trained = json.load(f)
    assert trained["variant"] == "image" and trained["step"] == 4
    os.remove(workdir / "eval" / "metrics.json")
    proc = cli(f"--workdir={workdir}", *flags, "--mode=evaluate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Evaluation opens the checkpoints read-only on purpose: Orbax's warning says nothing.
    assert "read only" not in proc.stderr, proc.stderr[-3000:]
    with open(workdir / "eval" / "metrics.json") as f:
        assert json.load(f) == trained


SYN = "--config=configs/synthetic.py"


@pytest.mark.parametrize(
    "args, message",
    [
        # absl's own one-line errors, not a traceback.
        (
            [SYN],
            "FATAL Flags parsing error: flag --workdir=None: Flag --workdir must have a value "
            "other than None.\n",
        ),
        ([SYN, "WORKDIR", "--workdr=x"], "FATAL Flags parsing error: Unknown command line flag"),
        (
            [SYN, "WORKDIR", "--config.train.batch_size=abc"],
            "FATAL Flags parsing error: flag --config.train.batch_size=abc: invalid literal",
        ),
        (
            ["--config=configs/synthetic.py:klass", "WORKDIR"],
            "FATAL Flags parsing error: flag --config=configs/synthetic.py:klass: ValueError: "
            "Unknown config argument 'klass': it names the model variant, one of resnet, image, "
            "class.\n",
        ),
        # Issue 21 case 10: a field given twice, whose tuple values ml_collections joined.
        (
            [SYN, "WORKDIR", "--config.experiment.seeds=(0,)", "--config.experiment.seeds=(1,)"],
            "FATAL Flags parsing error: --config.experiment.seeds is given 2 times: give each "
            "flag once",
        ),
        # A mistyped part of an override path: its last part, or one in the middle.
        (
            [SYN, "WORKDIR", "--config.train.batchsize=8"],
            "FATAL: --config.train.batchsize=8: the config has no field 'batchsize' in "
            "config.train. Did you mean 'batch_size'?\n",
        ),
        (
            [SYN, "WORKDIR", "--config.trian.batch_size=8"],
            "FATAL: --config.trian.batch_size=8: the config has no field 'trian' in config. "
            "Did you mean 'train'?\n",
        ),
        # config.validate: every problem at once, before anything is written or compiled.
        (
            [
                SYN,
                "WORKDIR",
                "--config.train.batch_size=0",
                "--config.train.eval_every_steps=0",
                "--config.data.split=foo",
                "--config.model.compatibility=cosine",
            ],
            "FATAL: 4 problems:\n"
            "  - config.data.split='foo': expected one of random, kfold, official.\n"
            "  - config.model.compatibility='cosine': expected one of pc, additive, dp.\n"
            "  - config.train.batch_size=0: must be at least 1.\n"
            "  - config.train.eval_every_steps=0: must be at least 1.\n",
        ),
        (
            [SYN, "WORKDIR", "--mode=predict", "--config.train.num_steps=0"],
            # (num_steps is not read by predict)
            "FATAL: 2 problems:\n"
            "  - --mode=predict needs --images=a.png,b.jpg,c.dcm (comma-separated).\n"
            "  - --workdir 'WORKDIR' does not exist; --mode=predict reads the checkpoints",
        ),
        (
            [SYN, "WORKDIR", "--mode=evaluate", "--images=a.png"],
            "  - --images is read by --mode=predict only; this is --mode=evaluate.\n"
            "  - --workdir 'WORKDIR' does not exist; --mode=evaluate reads the checkpoints that "
            "--mode=train wrote there.\n",
        ),
        (["--config=configs/nih.py", "WORKDIR"], "config.data.data_dir=None: not set"),
        # Past validation: the data set's own check, still one line.
        (
            ["--config=configs/chexpert.py", "WORKDIR", "--config.data.data_dir=/nonexistent"],
            "FATAL: No prepared 'chexpert' data set at /nonexistent/",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, cli, args, message):
    """A user's mistake ends in one FATAL message, with a non-zero exit status, no
    traceback, and no workdir written."""
    workdir = tmp_path / "w"
    proc = cli(*[f"--workdir={workdir}" if a == "WORKDIR" else a for a in args])
    assert proc.returncode != 0
    assert message.replace("WORKDIR", str(workdir)) in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not workdir.exists()


def test_workdir_that_is_a_file_from_the_command_line(tmp_path, cli):
    path = tmp_path / "file"
    path.write_text("")
    proc = cli("--config=configs/synthetic.py", f"--workdir={path}", "--mode=evaluate")
    assert proc.returncode != 0
    assert f"--workdir {str(path)!r} exists and is not a directory" in proc.stderr
