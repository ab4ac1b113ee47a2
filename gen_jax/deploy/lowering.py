"""Functions lowered to `jax.export` programs for an artifact: their records
(arguments with specs, meanings and examples), the params each reads, lowering
for platforms, and the files they become. jax, numpy and safetensors only."""

import dataclasses
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.extend.core
import numpy as np
from jax import export as jax_export

from gen_jax.deploy import artifact

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument after params: its spec (dims may be symbolic), what it
    means, and the example value example.npz records."""

    name: str
    spec: object  # a ShapeDtypeStruct, or a pytree of them (the KV cache)
    meaning: str
    example: object


@dataclasses.dataclass(frozen=True)
class Function:
    fn: Callable  # (params, *args)
    args: list[Arg]
    outputs: list[str]  # what each output is


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """{"gen": {"conv": {"kernel": x}}} -> {"gen/conv/kernel": x}."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}/")
    return flat


def used_params(fn: Function, params: dict) -> dict:
    """The params leaves `fn` reads (a GAN's sampler takes no discriminator, a
    VAE's no encoder): the artifact stores and passes only those."""
    flat = flatten(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    )
    specs = [a.spec for a in fn.args]
    closed = jax.make_jaxpr(fn.fn)(artifact.unflatten(flat), *specs)
    num = len(flat)
    invars = closed.jaxpr.invars[:num]
    read = {
        id(v)
        for v in [
            *(x for e in closed.jaxpr.eqns for x in e.invars),
            *closed.jaxpr.outvars,
        ]
        if isinstance(v, jax.extend.core.Var)
    }
    names = [k for k, _ in flatten_with_order(flat)]
    values = flatten(params)
    return {name: values[name] for name, var in zip(names, invars) if id(var) in read}


def flatten_with_order(flat: dict) -> list:
    """(name, value) in the order `jax.tree.leaves` visits the unflattened tree."""
    tree = artifact.unflatten(dict(flat))
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [("/".join(k.key for k in path), value) for path, value in paths]


def lower(
    name: str, fn: Function, abstract: dict, platforms: Sequence[str]
) -> jax_export.Exported:
    """`jax.export` of one function for `platforms`, or one line saying which
    platform cannot be lowered here and which can."""
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ValueError(
            f"--platforms: unknown {unknown or 'empty list'}; choose from {', '.join(PLATFORMS)}"
        )
    specs = [artifact.unflatten(abstract), *(a.spec for a in fn.args)]
    try:
        return jax_export.export(jax.jit(fn.fn), platforms=tuple(platforms))(*specs)
    except Exception:  # find the platform(s) that fail, for the message
        ok, failed = [], {}
        for platform in platforms:
            try:
                jax_export.export(jax.jit(fn.fn), platforms=(platform,))(*specs)
                ok.append(platform)
            except Exception as e:  # noqa: BLE001 - reported below
                failed[platform] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if not failed:
            raise
        why = "; ".join(f"{p}: {m}" for p, m in failed.items())
        raise ValueError(
            f"cannot lower {name!r} for {', '.join(failed)} here ({why}); "
            f"platforms that lower here: {', '.join(ok) or 'none'}"
        ) from None


def describe(arg: Arg) -> dict:
    leaf = jax.tree.leaves(arg.spec)[0]
    return {
        "name": arg.name,
        "shape": [str(d) if not isinstance(d, int) else d for d in leaf.shape],
        "dtype": str(leaf.dtype),
        "meaning": arg.meaning,
    }


def write_functions(
    functions: dict[str, Function],
    params: dict,
    out_path: pathlib.Path,
    platforms: Sequence[str],
) -> dict:
    """Lowers and writes each function, the params they read and their
    examples; returns the manifest's "functions"."""
    stored, examples, manifest_fns = {}, {}, {}
    for name, fn in functions.items():
        used = used_params(fn, params)
        exported = lower(name, fn, used, platforms)
        (out_path / f"{name}.jax").write_bytes(exported.serialize())
        stored |= used
        # What gen_jax itself computes (jit of the same function), for load.py.
        example_args = [a.example for a in fn.args]
        outputs = jax.jit(fn.fn)(artifact.unflatten(used), *example_args)
        for i, leaf in enumerate(jax.tree.leaves(example_args)):
            examples[f"{name}/in/{i}"] = np.asarray(leaf)
        for i, leaf in enumerate(jax.tree.leaves(outputs)):
            examples[f"{name}/out/{i}"] = np.asarray(leaf)
        manifest_fns[name] = {
            "file": f"{name}.jax",
            "params": sorted(used),
            "args": [
                {"name": "params", "meaning": "params.safetensors: the keys above"},
                *(describe(a) for a in fn.args),
            ],
            "outputs": fn.outputs,
        }
    from safetensors.numpy import save_file

    save_file(
        # np.array, not np.ascontiguousarray: that one makes a scalar 1-D (a
        # latent run's autoencoder scale).
        {k: np.array(v, order="C") for k, v in stored.items()},
        str(out_path / "params.safetensors"),
    )
    np.savez_compressed(out_path / "example.npz", **examples)
    return manifest_fns
