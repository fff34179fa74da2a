"""Data parallelism: one ``data`` mesh axis over every device of every process, and the ``shard_map`` wrapper.

The training step (:mod:`cfip_jax.train.step`) is written for one device's share of the batch and wrapped once with
``jax.shard_map`` over :data:`DATA_AXIS`. The state is replicated (``P()``); each device draws its own datasets inside
the compiled step, so no batch crosses the host.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P  # noqa: N817

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The sharding of the training state: a full copy on every device."""
    return NamedSharding(mesh, P())


def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh, name: str = "batch_size") -> int:
    """Datasets per device; raises a ``ValueError`` when ``global_batch`` does not divide over the devices."""
    n = mesh.shape[DATA_AXIS]
    if global_batch % n:
        raise ValueError(f"{name} {global_batch} must be a multiple of the number of devices ({n})")
    return global_batch // n


def to_host(tree: Any) -> Any:
    """Fetch a pytree of replicated arrays as NumPy, also when the arrays span devices of other processes."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(x)

    return jax.tree.map(fetch, tree)


_BARRIERS = itertools.count()
BARRIER_TIMEOUT_S = 3600  # compiling one program on a loaded host can take minutes; a dead process still ends a run


def compiled_together(jitted: Callable, *args: Any, name: str) -> Callable:
    """In a run of several processes: ``jitted`` compiled for ``args``, after which every process waits for the others.

    XLA's CPU collectives (Gloo) open their connections when a compiled program first runs and give a late process
    30 s to join, while one process can compile minutes after another on a loaded host. So each process compiles
    first and they meet at a barrier of JAX's coordination service (timeout :data:`BARRIER_TIMEOUT_S`), then run the
    program together. Call it in every process, in the same order; ``name`` says which program (for a timeout's
    message). With one process it returns ``jitted`` itself (compiled on its first call, as always).
    """
    if jax.process_count() == 1:
        return jitted
    compiled = jitted.lower(*args).compile()
    sync = ocp.multihost.get_barrier_sync_fn()
    sync(key=f"cfip_compiled_{next(_BARRIERS)}_{name}", timeout_ms=BARRIER_TIMEOUT_S * 1000)
    return compiled
