"""Device mesh, and the shardings of the train state and of batches."""

import math
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # batches split over every axis (FSDP is data-parallel)


def make_mesh(
    cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A (data, fsdp) mesh over `devices` (default: all); -1 takes what is left."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [cfg[a] for a in AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(cfg)}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(
                f"config.mesh {dict(cfg)} does not divide {len(devices)} devices"
            )
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"config.mesh {dict(cfg)} needs {math.prod(shape)} devices, "
            f"found {len(devices)}; set one axis to -1"
        )
    # Auto axis types: jit propagates the shardings we give at the boundaries.
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Shards the largest dimension divisible by the fsdp size; else replicates."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*[None] * dim, "fsdp")
    return P()


def state_shardings(abstract_state, mesh: Mesh, fsdp_min_size: int):
    """Shardings for every leaf of a (abstract) train state, by shape; leaves
    under `fsdp_min_size` elements stay replicated (sharding them saves nothing).

    Params, their optimizer moments and their EMA have equal shapes, so they get
    equal shardings and the update needs no communication beyond FSDP's gathers.
    """
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, fsdp, fsdp_min_size)),
        abstract_state,
    )
