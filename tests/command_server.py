"""A fork server for the commands the tests run: ``python -m MODULE ARGS`` without paying
for Python's start and the imports of jax, flax, orbax, grain and TFDS each time.

Every command a test runs starts a Python process that imports the same libraries, about
2.3 s of CPU on the 2-core machine before the command does anything (most commands a test
runs are a refusal or a few steps of the tiny model, which take less). The server is one
process per test worker that imports those libraries once and then forks a child per
command; the child sets the command's working directory, environment and ``sys.argv`` and
runs the module as ``python -m`` does (``runpy.run_module(..., run_name="__main__")``),
its standard output and error going to files that the test reads back. The command's own
module, and every module that defines command-line flags, is imported fresh in the child,
as in a new process.

Not forked, a plain subprocess instead: a command whose environment differs from the
server's in what the libraries read when they are imported (``JAX_*``, ``XLA_*``,
``PYTHON*``, ...), one given other ``subprocess`` arguments than ``cwd`` (standard input,
...), and every command when ``CHESTATTN_TEST_FORK_SERVER=0``. Commands that a test
signals or watches run as plain processes too (:meth:`CommandLine.start` in conftest).

The server is safe to fork because it is single-threaded: importing these libraries
starts no thread, and it runs nothing (no JAX backend) before forking; it checks this.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import time

# Modules that define absl flags when imported: imported in the server, they would be
# defined twice when the child runs one of them as __main__.
FLAG_MODULES = (
    "chestattn_jax.main",
    "chestattn_jax.compare",
    "chestattn_jax.experiment.__main__",
    "chestattn_jax.data.export",
    "chestattn_jax.data.prepare",
)
PRELOAD = (
    "numpy",
    "jax",
    "jax.numpy",
    "flax.linen",
    "optax",
    "orbax.checkpoint",
    "grain",
    "tensorflow_datasets",
    "ml_collections",
    "absl.app",
    "PIL.Image",
    "pydicom",
    "sklearn.metrics",
    "matplotlib",
    "chestattn_jax.train",
    "chestattn_jax.evaluation",
    "chestattn_jax.predict_images",
    "chestattn_jax.validation",
    "chestattn_jax.distributed",
)
# Environment variables read by the libraries when they are imported (or by Python at
# start): a command that sets any of them other than the server runs as a new process.
IMPORT_TIME_ENV = ("JAX_", "XLA_", "PYTHON", "TF_", "LD_", "OMP_", "MALLOC", "TPU_", "CUDA")


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    loaded = [m for m in FLAG_MODULES if m in sys.modules]
    if loaded:
        raise RuntimeError(f"the fork server must not import {loaded}: they define flags")
    if threading.active_count() != 1:
        raise RuntimeError(f"the fork server is not single-threaded: {threading.enumerate()}")


def _child(request: dict, out: str, err: str) -> None:
    """Becomes the command: never returns (``sys.exit`` or the command's own exit)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # as ``python -m`` puts the working directory first
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit code (negative: the signal that ended it), or None after
    ``timeout`` seconds (the child killed)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def serve() -> None:
    """Reads one JSON request per line from standard input, answers one per line on the
    original standard output."""
    _preload()
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing the server prints can be read as a reply
    print(json.dumps({"ready": os.getpid()}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        out, err = request["stdout"], request["stderr"]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(request, out, err)
        code = _wait(pid, request["timeout"])
        print(json.dumps({"returncode": code}), file=replies, flush=True)


class ForkServer:
    """The client: ``run(argv_module, args, cwd, env, timeout)`` -> CompletedProcess, or
    None where the command must run as a new process instead."""

    def __init__(self, env: dict):
        self.env = dict(env)
        self.lock = threading.Lock()
        self.proc = None
        self.tmp = tempfile.mkdtemp(prefix="forkserver-")
        self.count = 0

    def _start(self):
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        ready = self.proc.stdout.readline()
        if not ready.startswith('{"ready"'):
            raise RuntimeError(f"the fork server did not start: {ready!r}")

    def forkable(self, env: dict) -> bool:
        changed = {k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k)}
        return not any(k.startswith(IMPORT_TIME_ENV) for k in changed)

    def run(self, module: str, args, cwd, env: dict, timeout: float):
        if os.environ.get("CHESTATTN_TEST_FORK_SERVER") == "0" or not self.forkable(env):
            return None
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            self.count += 1
            out = os.path.join(self.tmp, f"{self.count}.out")
            err = os.path.join(self.tmp, f"{self.count}.err")
            request = dict(
                module=module,
                args=[str(a) for a in args],
                cwd=str(cwd),
                env=env,
                timeout=timeout,
                stdout=out,
                stderr=err,
            )
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the fork server died")
        code = json.loads(reply)["returncode"]
        argv = [sys.executable, "-m", module, *map(str, args)]
        texts = []
        for path in (out, err):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
            os.remove(path)
        if code is None:
            raise subprocess.TimeoutExpired(argv, timeout, texts[0], texts[1])
        return subprocess.CompletedProcess(argv, code, texts[0], texts[1])

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


if __name__ == "__main__":
    serve()
