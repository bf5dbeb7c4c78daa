"""Start-up of multi-process (multi-host) runs.

One process per host (or per accelerator group) runs the same command. They find
each other through ``jax.distributed.initialize()``, which must come before any
other JAX call:

- Cloud TPU pods, SLURM, Open MPI: pass ``--distributed``; the coordinator, the
  number of processes and this process's index are detected from the environment.
- Anywhere else (several GPU machines, or CPU processes on one machine): pass
  ``--coordinator_address=HOST:PORT`` (process 0's address and a free port; or set
  ``JAX_COORDINATOR_ADDRESS``), ``--num_processes=N`` and ``--process_id=I``
  (``0 .. N-1``, a different one per process).

One process alone needs none of this. CPU processes exchange gradients through
gloo; TPU and GPU processes through their own interconnect.
"""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    autodetect: bool = False,
) -> bool:
    """Calls ``jax.distributed.initialize`` when this process is one of several.

    Args:
      coordinator_address: ``host:port`` of process 0 (default ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: processes in the run; more than 1 starts the distributed runtime.
      process_id: this process's index in ``0 .. num_processes - 1``.
      autodetect: start it even without ``num_processes``, detecting the cluster
        (Cloud TPU, SLURM, Open MPI, Kubernetes) from the environment.

    Returns:
      Whether the distributed runtime was started. On processes other than 0 the
      absl log is then limited to warnings, so progress lines appear once.
    """
    if not autodetect and (num_processes is None or num_processes <= 1):
        if process_id not in (None, 0):
            raise ValueError(
                f"--process_id={process_id} needs --num_processes greater than {process_id}."
            )
        return False
    if num_processes is not None and num_processes > 1:
        missing = [
            name
            for name, value in (
                (
                    "--coordinator_address",
                    coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"),
                ),
                ("--process_id", process_id),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"--num_processes={num_processes} also needs {' and '.join(missing)} "
                f"(process 0's host:port, and this process's index 0..{num_processes - 1})."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"--process_id={process_id} is outside 0..{num_processes - 1} "
                f"(--num_processes={num_processes})."
            )
    # Only the CPU backend reads this; without it CPU processes cannot all-reduce
    # across processes. It must be set before the backend starts, as must initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    return True


def is_multiprocess() -> bool:
    """Whether the distributed runtime was started (several processes share the run)."""
    return jax.distributed.is_initialized()
