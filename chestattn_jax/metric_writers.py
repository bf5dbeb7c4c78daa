"""Scalar logging: a JSON-lines file and TensorBoard event files, from process 0 only."""

from __future__ import annotations

import json
import math
import os
import time

from absl import logging
from etils import epath

from chestattn_jax.files import is_local, write_text
from chestattn_jax.workdir import METRICS_FILE, writes_files


def read_jsonl(path) -> list[dict]:
    """The rows of a JSON-lines file; an unparseable last line (a write cut short) is dropped."""
    path = epath.Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return rows


class MetricWriter:
    """Writes ``{name: float}`` per step to ``WORKDIR/metrics.jsonl`` and ``WORKDIR/tensorboard``.

    A run resumed from the checkpoint of step ``resume_step`` continues both logs
    from that step: rows of later steps, logged by the interrupted run after its
    last checkpoint, are removed from ``metrics.jsonl`` (they will be logged
    again, with the same values), and TensorBoard is told to hide later events of
    the earlier event files (``purge_step``). ``resume_step=0`` starts both afresh.

    On processes other than 0 every call does nothing, so callers need no checks.
    """

    def __init__(self, workdir, resume_step: int = 0):
        self._active = writes_files()
        if not self._active:
            return
        from tensorboardX import SummaryWriter  # imported here: only process 0 needs it

        workdir = epath.Path(workdir)
        self._path = workdir / METRICS_FILE
        kept = [r for r in read_jsonl(self._path) if r.get("step", 0) <= resume_step]
        self._lines = [json.dumps(r) + "\n" for r in kept]
        self._rewrite()
        # Object stores (gs://) cannot append: there the file is rewritten at each call.
        self._append = self._path.open("a") if is_local(self._path) else None
        try:
            self._tb = SummaryWriter(
                os.fspath(workdir / "tensorboard"),
                purge_step=resume_step + 1,
                # Event files are named by the second they start: keep a quick restart's apart.
                filename_suffix=f".step{resume_step}",
            )
        except ImportError as e:  # gs:// without google-cloud-storage installed
            logging.warning("No TensorBoard events (%s); metrics.jsonl has every scalar.", e)
            self._tb = None

    def write_scalars(self, step: int, scalars: dict) -> None:
        if not self._active:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        # JSON has no NaN; write null so the file stays valid JSON lines.
        row = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        line = json.dumps(row) + "\n"
        if self._append is not None:
            self._append.write(line)
            self._append.flush()
        else:
            self._lines.append(line)
            self._rewrite()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))
            self._tb.flush()

    def _rewrite(self) -> None:
        # Whole or not at all (files.write_text), so a kill never leaves half a log behind.
        write_text(self._path, "".join(self._lines))

    def close(self) -> None:
        if self._active:
            if self._append is not None:
                self._append.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """Steps/s, images/s, the share of time spent waiting for input, and ETA between reports.

    ``waited(seconds)`` adds time the loop spent blocked on the input pipeline (``next``
    on the data iterator). The train step is dispatched asynchronously, so while the
    device is the bottleneck the loop runs ahead and finds batches ready (``data_wait``
    near 0); when the pipeline is, the loop waits for it and the device idles (near 1).
    """

    def __init__(self, total_steps: int, batch_size: int, first_step: int):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._last_step = first_step
        self._last_time = time.perf_counter()
        self._waited = 0.0

    def waited(self, seconds: float) -> None:
        self._waited += seconds

    def report(self, step: int, scalars: dict) -> dict:
        now = time.perf_counter()
        steps = step - self._last_step
        elapsed = max(now - self._last_time, 1e-9)
        wait = min(self._waited / elapsed, 1.0)
        self._last_step, self._last_time, self._waited = step, now, 0.0
        rate = steps / elapsed
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        logging.info(
            "step %d/%d | %s | %.2f steps/s | %.1f images/s | input wait %.0f%% | ETA %s",
            step,
            self.total_steps,
            " ".join(f"{k} {v:.4f}" for k, v in scalars.items()),
            rate,
            rate * self.batch_size,
            100 * wait,
            _format_seconds(eta),
        )
        return {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size, "data_wait": wait}


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
