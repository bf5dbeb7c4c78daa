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


def local_batch_size(global_batch_size: int, field: str) -> int:
    """This process's share of a global batch; the batch must split over every device."""
    devices, processes = jax.device_count(), jax.process_count()
    in_use = f"{devices} device" if devices == 1 else f"{devices} devices"
    if global_batch_size <= 0:
        raise ValueError(
            f"{field}={global_batch_size} must be positive: a multiple of the {in_use} in use."
        )
    if global_batch_size % devices:
        raise ValueError(
            f"{field}={global_batch_size} is not divisible by the {in_use} in use; "
            f"pick a multiple of {devices}."
        )
    return global_batch_size // processes


def to_global(batch: dict, sharding: NamedSharding) -> dict:
    """Host-local numpy batch -> global ``jax.Array`` s sharded on the batch axis."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
