"""Two CPU processes (jax.distributed over localhost, gloo collectives) train like one.

The 2-process run is also preempted (SIGTERM on process 1 only) and resumed, so the
preemption agreement and the per-process data-iterator checkpoints are exercised.
"""

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import REPO, final_state, subprocess_env

from chestattn_jax import distributed, train
from chestattn_jax.checkpointing import UNREADABLE_DIR, Checkpointer
from chestattn_jax.data.augment import Augment
from chestattn_jax.data.input_pipeline import train_dataset
from chestattn_jax.data.synthetic import PhantomChestXray, PhantomConfig
from chestattn_jax.metric_writers import read_jsonl

# What chestattn_jax.main does with --coordinator_address, --num_processes and
# --process_id, then the training half of --mode=train (no test-set evaluation).
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests")
    from conftest import distributed_config
    from absl import logging
    from chestattn_jax import distributed, train
    logging.use_absl_handler()  # timestamped lines, as under absl.app
    logging.set_verbosity(logging.INFO)  # process 1 is quietened to warnings
    coordinator, processes, index, workdir = sys.argv[1:]
    distributed.initialize(coordinator, int(processes), int(index))
    train.train(distributed_config(), workdir)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, processes, logs, env_extra=None):
    """The processes of a run on localhost (one CPU device each), as ``[(Popen, log)]``."""
    env = subprocess_env(env_extra)
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for i in range(processes):
        log = open(logs / f"{workdir.name}_{i}_{len(list(logs.iterdir()))}.log", "w+")
        cmd = [sys.executable, "-c", SCRIPT, coordinator, str(processes), str(i), str(workdir)]
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log), log))
    return procs


def wait_all(procs, timeout=300):
    """``[(returncode, output)]``; kills what is still running after ``timeout`` s."""
    results = []
    try:
        for p, log in procs:
            p.wait(timeout=timeout)
            log.seek(0)
            results.append((p.returncode, log.read()))
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    return results


def relative_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(x - y) / (np.abs(y) + 1e-3)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def max_abs_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, resume_reference):
    """A 2-process run preempted (SIGTERM on process 1 only) and resumed to step 12:
    ``(workdir, logs, stage 1's [(code, output)], stage 2's [(code, output)])``."""
    root = tmp_path_factory.mktemp("two_processes")
    two, logs = root / "two", root / "logs"
    logs.mkdir()
    # Process 1 alone gets the SIGTERM; both must save the same step and exit 143.
    procs = launch(two, 2, logs, {train.SIGNAL_AT_STEP_ENV: "3:SIGTERM:1"})
    resume_reference.start()  # 1 process, meanwhile
    preempted = wait_all(procs)
    steps = Checkpointer(two, read_only=True).all_steps()
    # Each process's data iterator file of the preempted step (gone once the run resumes
    # and later steps replace it).
    data_files = sorted(p.name for p in (two / "checkpoints" / str(steps[-1]) / "data").glob("*"))
    finished = wait_all(launch(two, 2, logs))
    return two, logs, (preempted, steps, data_files), finished


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_after_preemption(
    two_process_run, resume_reference
):
    two, _, (first, steps, data_files), finished = two_process_run
    (code_a, out_a), (code_b, out_b) = first
    assert code_a == code_b == 128 + signal.SIGTERM, (out_a[-3000:], out_b[-3000:])
    preempted_at = steps[-1]
    assert 3 <= preempted_at < 12, steps  # JAX picks the step all processes can reach
    for out in (out_a, out_b):
        assert f"saved the checkpoint of step {preempted_at}" in out
    assert [f for f in data_files if f.startswith("process_")] == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    assert "Parameters:" in out_a and "Parameters:" not in out_b  # INFO from process 0 only

    for code, out in finished:
        assert code == 0, out[-3000:]

    one = resume_reference.done()
    step2, state2 = final_state(two)
    _, state1 = final_state(one, step=12)
    assert step2 == 12
    # The same global batches; only the order of floating-point sums differs (the
    # gradient and BatchNorm reductions span two processes), as in test_sharding. Its
    # 1e-4 holds for 3 steps; over 12, Adam (which divides by sqrt(v)) carries those
    # rounding differences into weights near zero: the largest relative difference is
    # a few 1e-4, in weights of ~3e-3, an absolute difference of about 1e-6.
    assert relative_difference(state2["params"], state1["params"]) < 1e-3
    assert max_abs_difference(state2["params"], state1["params"]) < 1e-5
    assert relative_difference(state2["batch_stats"], state1["batch_stats"]) < 1e-4
    rows1 = [r for r in read_jsonl(one / "metrics.jsonl") if r["step"] <= 12]
    rows2 = read_jsonl(two / "metrics.jsonl")
    # One writer: no row twice, though the run was interrupted and both processes resumed.
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [4, 6, 8, 12, 12]
    for r1, r2 in zip(rows1, rows2, strict=True):
        for k in ("train/loss", "val/loss"):
            if k in r1:
                assert r2[k] == pytest.approx(r1[k], rel=1e-5), (k, r1["step"])
    assert rows1[0]["train/loss"] != rows1[-2]["train/loss"]  # training moved
    assert json.loads((two / "config.json").read_text())["train"]["num_steps"] == 12


@pytest.mark.slow
def test_one_process_failing_to_read_a_checkpoint_does_not_strand_the_other(
    two_process_run, tmp_path
):
    """Only process 1 reads ``data/process_1-of-2.json``: damaged, process 1 cannot restore
    step 12 while process 0 can. Both must agree to resume from the step before, at once
    (not wait at a barrier for one that never comes), and end where the first run ended."""
    two, logs, _, _ = two_process_run
    _, reference = final_state(two)
    workdir = tmp_path / "damaged"
    shutil.copytree(two, workdir)
    steps = Checkpointer(workdir, read_only=True).all_steps()
    assert steps[-1] == 12 and len(steps) >= 2, steps
    own_file = workdir / "checkpoints" / "12" / "data" / "process_1-of-2.json"
    own_file.write_text(own_file.read_text()[:10])
    (code_a, out_a), (code_b, out_b) = wait_all(launch(workdir, 2, logs), timeout=240)
    assert code_a == code_b == 0, (out_a[-3000:], out_b[-3000:])
    fallback = steps[-2]
    for out in (out_a, out_b):
        assert "checkpoints/12 is unreadable" in out and f"resumed from step {fallback}" in out
    assert "process_1-of-2.json" in out_b  # the process that failed names its file
    assert "it failed on another process" in out_a
    assert (workdir / UNREADABLE_DIR / "12").is_dir()
    step, state = final_state(workdir)
    assert step == 12
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_main_checks_the_distributed_flags(tmp_path, monkeypatch):
    from absl.testing import flagsaver

    from chestattn_jax import main

    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    argv = [
        "main",
        f"--config={REPO / 'configs' / 'synthetic.py'}",
        f"--workdir={tmp_path}",
        "--num_processes=2",
        "--process_id=1",
    ]
    with flagsaver.flagsaver():
        main.parse_flags(argv)
        with pytest.raises(ValueError, match="--num_processes=2 also needs --coordinator_address"):
            main.main(["main"])
    assert not distributed.is_multiprocess()


def test_each_process_reads_its_rows_of_the_global_batch():
    """Process p of P reads rows p*B..(p+1)*B-1 of each global batch, augmented alike."""
    source = PhantomChestXray(size=24, config=PhantomConfig(image_size=16))

    def batches(batch_size, shard, n):
        it = iter(
            train_dataset(source, batch_size=batch_size, seed=3, augment=Augment(), shard=shard)
        )
        return [next(it) for _ in range(n)]

    whole = batches(8, (0, 1), 5)  # 5 global batches: past the first epoch of 3
    parts = [batches(4, (p, 2), 5) for p in range(2)]
    for b in range(5):
        for key in ("image", "labels", "mask"):
            joined = np.concatenate([parts[0][b][key], parts[1][b][key]])
            np.testing.assert_array_equal(joined, whole[b][key])
    # Disjoint within an epoch: the 3 batches of each process hold 12 different images.
    for part in parts:
        images = np.concatenate([x["image"] for x in part[:3]]).reshape(12, -1)
        assert len({row.tobytes() for row in images}) == 12


@pytest.mark.parametrize(
    "args, message",
    [
        ((None, 2, 0), "--num_processes=2 also needs --coordinator_address"),
        (("127.0.0.1:1", 2, None), "needs --process_id"),
        (("127.0.0.1:1", 2, 2), "--process_id=2 is outside 0..1"),
        ((None, None, 1), "--process_id=1 needs --num_processes"),
    ],
)
def test_distributed_flags_are_checked_before_anything_starts(args, message, monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(*args)
    assert not distributed.is_multiprocess()


def test_one_process_needs_no_distributed_runtime():
    assert distributed.initialize(None, 1, 0) is False
    assert distributed.initialize() is False
