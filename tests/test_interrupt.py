"""Ctrl-C during training: SIGINT to the whole foreground process group, as a terminal
sends it, grain's workers included. The run finishes its step, saves it, says so in one
line and exits with status 130; the same command resumes from that step."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import (
    REPO,
    finish,
    proc_stat,
    resume_config,
    start_training,
    subprocess_env,
    tiny_flags,
)

from chestattn_jax import train
from chestattn_jax.checkpointing import UNREADABLE_DIR, Checkpointer
from chestattn_jax.metric_writers import read_jsonl

# What the first Ctrl-C prints at once: the step may go on for minutes (a validation).
NOTE = (
    "Ctrl-C: saving a checkpoint after this step, then stopping; "
    "press Ctrl-C again to stop at once without it."
)


def _workers(pid: int) -> list[int]:
    """The grain workers among the children of ``pid`` (multiprocessing's spawned
    processes: its resource tracker, also a child, is not one)."""
    found = []
    for entry in os.listdir("/proc"):
        stat = proc_stat(entry) if entry.isdigit() else None
        if stat and int(stat[1]) == pid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _wait_until_stopped(proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = proc_stat(proc.pid)
        if stat is None or proc.poll() is not None:
            raise AssertionError(f"the run ended before step 3 (status {proc.poll()})")
        if stat[0] == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the run did not reach step 3")


@pytest.mark.slow
def test_ctrl_c_saves_the_step_exits_130_and_the_same_command_resumes(tmp_path, cli):
    workdir = tmp_path / "w"
    config = resume_config()
    config.data.num_workers = 1  # a grain worker process, which the SIGINT reaches too
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        proc = cli.start(
            f"--workdir={workdir}",
            *tiny_flags(config),
            # After step 3 (neither logged nor validated) the run stops itself (SIGSTOP),
            # so that the Ctrl-C below lands at a known step; the kernel delivers it to
            # the stopped process on SIGCONT, as it would have at once.
            env={train.SIGNAL_AT_STEP_ENV: "3:SIGSTOP"},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        _wait_until_stopped(proc)
        assert _workers(proc.pid), "no grain worker to receive the SIGINT"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        os.killpg(proc.pid, signal.SIGCONT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = stderr.read_text()
    assert code == 128 + signal.SIGINT, out[-3000:]
    # Besides log records: the note that Ctrl-C was seen, and nothing else (no worker's
    # KeyboardInterrupt traceback, no shared memory reported leaked).
    others = [line for line in out.splitlines() if not re.match(r"^[IWEF]\d{4} \d\d:", line)]
    assert others == [NOTE], out[-3000:]
    saved = f"Interrupted (SIGINT): saved the checkpoint of step 3 in {workdir}/checkpoints/3;"
    assert saved in out, out[-3000:]
    assert Checkpointer(workdir, read_only=True).all_steps() == [3]

    # The rerun, train.train of the same config to step 4, resumes from the one checkpoint:
    # it restores (a fresh start would not note the settings it resumed with) and sets
    # nothing aside. Step 4 logs the mean loss of steps 1..4: 1..3 came from checkpoint 3.
    code, out = finish(start_training(workdir, data={"num_workers": 1}, num_steps=4))
    assert code == 0, out[-3000:]
    assert "Resumed with other settings than before: train.num_steps: 24 -> 4" in out, out
    assert not (workdir / UNREADABLE_DIR).exists()
    assert Checkpointer(workdir, read_only=True).all_steps() == [3, 4]
    assert [r["step"] for r in read_jsonl(workdir / "metrics.jsonl")] == [4, 4]


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once():
    """The first SIGINT is noted (and acted on after the step); a second one, while the
    checkpoint is written, ends the process as SIGINT does by default."""
    script = (
        "import os, signal, time\n"
        "from chestattn_jax import train\n"
        "with train._PreemptionNotice() as notice:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    assert notice.reached(1)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "print('still running')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGINT, proc.stderr[-3000:]
    assert "still running" not in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [NOTE], proc.stderr


def test_ctrl_c_handlers_are_put_back_and_a_late_one_is_not_lost():
    """Outside the training loop Ctrl-C raises KeyboardInterrupt as usual; one that
    arrives after the loop's last look at it is raised when the loop ends."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with train._PreemptionNotice():
            assert signal.getsignal(signal.SIGINT) is not before[0]
            os.kill(os.getpid(), signal.SIGINT)  # noted, not raised here
        raise AssertionError("the Ctrl-C was swallowed")
    except KeyboardInterrupt:
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
