"""Device mesh, and the shardings of the train state and of batches."""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # FSDP is data-parallel too; "tensor" splits the model
# Logical axis names used by models -> mesh axes. A dimension that the mesh axis
# does not divide stays unsharded.
LOGICAL_RULES = {
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,
    "layers": None,  # a scanned transformer's stacked blocks
}


def make_mesh(
    cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A (data, fsdp) mesh over `devices` (default: all); -1 takes what is left."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [cfg[a] for a in AXES]  # every axis is declared in configs/base.py
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
    # jax.make_mesh orders the devices by the physical topology (TPU ICI rings,
    # GPU NVLink islands) so neighbouring mesh positions are fast to talk to.
    # Auto axis types: jit propagates the shardings we give at the boundaries.
    return jax.make_mesh(
        shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices
    )


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


def _logical_spec(shape: tuple[int, ...], names: P, mesh: Mesh) -> P:
    """Mesh axes for a leaf whose dimensions carry logical names."""
    out, used = [], set()
    for size, name in zip(shape, tuple(names) + (None,) * len(shape)):
        axis = LOGICAL_RULES.get(name) if name else None
        ok = axis and axis not in used and size % mesh.shape[axis] == 0
        out.append(axis if ok and mesh.shape[axis] > 1 else None)
        used.add(axis)
    return P(*out)


def state_shardings(abstract_state, mesh: Mesh, fsdp_min_size: int):
    """Shardings for every leaf of an abstract train state whose params may be
    boxed with logical axis names (flax `with_logical_partitioning`).

    Named leaves follow LOGICAL_RULES; the others are sharded by shape: the
    largest dimension the fsdp axis divides, for leaves of at least
    `fsdp_min_size` elements (sharding smaller ones saves nothing).

    Params, their optimizer moments and their EMA have equal shapes, so they get
    equal shardings and the update needs no communication beyond FSDP's gathers.
    """
    fsdp = mesh.shape["fsdp"]
    names = nn.get_partition_spec(abstract_state)

    def leaf(name: P, x) -> NamedSharding:
        if any(name):
            return NamedSharding(mesh, _logical_spec(x.shape, name, mesh))
        return NamedSharding(mesh, _fsdp_spec(x.shape, fsdp, fsdp_min_size))

    return jax.tree.map(
        leaf, names, nn.unbox(abstract_state), is_leaf=lambda x: isinstance(x, P)
    )


def abstract_with_shardings(boxed, mesh: Mesh, fsdp_min_size: int):
    """(ShapeDtypeStructs carrying their target shardings, the shardings) for an
    abstract tree (a state or params) whose leaves may be boxed with logical
    axis names: sharded by `state_shardings`, then unboxed."""
    shardings = state_shardings(boxed, mesh, fsdp_min_size)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.unbox(boxed),
        shardings,
    )
    return abstract, shardings
