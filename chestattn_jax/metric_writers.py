"""Scalar logging: a JSON-lines file and TensorBoard event files, from process 0 only."""

from __future__ import annotations

import json
import math
import os
import time

import jax
from absl import logging


class MetricWriter:
    """Writes ``{name: float}`` per step to ``WORKDIR/metrics.jsonl`` and ``WORKDIR/tensorboard``.

    On processes other than 0 every call does nothing, so callers need no checks.
    """

    def __init__(self, workdir: str):
        self._active = jax.process_index() == 0
        if not self._active:
            return
        from tensorboardX import SummaryWriter  # imported here: only process 0 needs it

        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: dict) -> None:
        if not self._active:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        # JSON has no NaN; write null so the file stays valid JSON lines.
        row = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, float(v), int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._active:
            self._jsonl.close()
            self._tb.close()


class Progress:
    """Steps/s, images/s and ETA between two reports."""

    def __init__(self, total_steps: int, batch_size: int, first_step: int):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._last_step = first_step
        self._last_time = time.perf_counter()

    def report(self, step: int, scalars: dict) -> dict:
        now = time.perf_counter()
        steps = step - self._last_step
        elapsed = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        rate = steps / elapsed
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        logging.info(
            "step %d/%d | %s | %.2f steps/s | %.1f images/s | ETA %s",
            step,
            self.total_steps,
            " ".join(f"{k} {v:.4f}" for k, v in scalars.items()),
            rate,
            rate * self.batch_size,
            _format_seconds(eta),
        )
        return {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size}


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
