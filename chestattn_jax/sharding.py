"""One data-parallel mesh over all devices of all processes.

Parameters and optimizer state are replicated; batches are sharded along their
first axis over the ``data`` mesh axis. Under ``jax.jit`` the BatchNorm
statistics are therefore computed over the global batch, not per device.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D ``data`` mesh over ``devices`` (default: every device of every process).

    Devices are ordered by process, so process ``p``'s rows of a global batch are
    one block, the ``p``-th: the block its input pipeline reads (data/input_pipeline.py).
    """
    devices = jax.devices() if devices is None else devices
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def batch_split_problem(global_batch_size: int, num_devices: int) -> str | None:
    """What is wrong with a global batch of ``global_batch_size`` over ``num_devices``
    (``None`` if nothing): it must be a positive multiple of them."""
    if global_batch_size >= 1 and global_batch_size % num_devices == 0:
        return None
    in_use = f"{num_devices} device" if num_devices == 1 else f"{num_devices} devices"
    example = max(1, -(-global_batch_size // num_devices)) * num_devices
    return (
        f"must be a {'positive ' if global_batch_size < 1 else ''}multiple of the {in_use} "
        f"in use, over which the global batch is split (e.g. {example})."
    )


def check_config(p, mode: str, num_devices: int) -> None:
    """The batch sizes a ``mode`` run splits over ``num_devices``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`); a value that is not a positive integer
    is reported by its owner."""
    batches = ("train.batch_size",) if mode == "train" else ()
    for path in (*batches, "eval.batch_size"):
        value = p.value(path)
        if p.is_int(value) and value >= 1:
            problem = batch_split_problem(value, num_devices)
            if problem:
                p.add(path, problem)


def local_batch_size(global_batch_size: int, field: str) -> int:
    """This process's share of a global batch; the batch must split over every device."""
    problem = batch_split_problem(global_batch_size, jax.device_count())
    if problem:
        raise ValueError(f"{field}={global_batch_size}: {problem}")
    return global_batch_size // jax.process_count()


def to_global(batch: dict, sharding: NamedSharding) -> dict:
    """Host-local numpy batch -> global ``jax.Array`` s sharded on the batch axis."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
