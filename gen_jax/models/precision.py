"""The mixed-precision policy: a config's dtype name, and contractions computed
narrow (bf16 x bf16 -> float32) in the forward and the backward pass alike.
Params, optimizer state, losses and EMA stay float32 elsewhere."""

import functools
import os

import jax
import jax.numpy as jnp

from gen_jax import provenance

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """Maps a config string to a compute dtype (params always stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


# How a narrow contraction runs. "native": narrow x narrow -> float32 dots.
# "emulated": the operands rounded to the narrow dtype, then float32 dots (the
# same numbers, up to summation order). Measured on XLA:CPU (jaxlib 0.10.2,
# README's speed section): on a CPU without bf16 dot instructions (AVX2 only)
# YNNPACK's bf16 kernel ran 1.65x slower than its float32 one (2048x1024x1024:
# 39.5 vs 24.0 ms; the emulation 24.8), so there the emulation is the faster
# way to the same numbers.
NARROW_DOTS = ("native", "emulated")


def narrow_dots(dtype) -> str:
    """NARROW_DOTS' choice for `dtype`: $GEN_JAX_NARROW_DOTS where set (read
    when a program is traced); else "native" on accelerators and on CPUs with
    the dtype's dot instructions (or none known: not Linux), "emulated" on the
    rest."""
    forced = os.environ.get("GEN_JAX_NARROW_DOTS", "")
    if forced:
        if forced not in NARROW_DOTS:
            raise ValueError(
                f"GEN_JAX_NARROW_DOTS={forced!r}; use one of {NARROW_DOTS} or unset it"
            )
        return forced
    if jax.default_backend() != "cpu" or _cpu_has(jnp.dtype(dtype)):
        return "native"
    return "emulated"


@functools.cache
def _cpu_has(dtype) -> bool:
    features = provenance.cpu()["cpu_features"]
    wanted = provenance.NARROW_DOT_INSTRUCTIONS[dtype.name]
    return features is None or bool(wanted & set(features.split()))


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype, out=None) -> jax.Array:
    """Two-operand `jnp.einsum` computed in `dtype`, returned in `out` (default
    `dtype`; float32 keeps the accumulator's precision, e.g. logits). In
    float32 as it is. Narrower (bfloat16, float16): the operands cast to it and
    accumulated in float32 (`preferred_element_type`), forward and backward
    alike; XLA:CPU's YNNPACK runs bf16 x bf16 -> f32 natively, but upcasts a
    bf16 -> bf16 dot with converts, and JAX's own transpose of a mixed dot
    would make the backward's dots float32. Every index of an operand must
    appear in the other operand or the output (true of matmuls). Where
    `narrow_dots` says "emulated", float32 dots of the rounded operands."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return jnp.einsum(spec, a.astype(dtype), b.astype(dtype)).astype(out or dtype)
    if narrow_dots(dtype) == "emulated":
        a, b = (x.astype(dtype).astype(jnp.float32) for x in (a, b))
        return jnp.einsum(spec, a, b).astype(out or dtype)
    return _narrow_einsum(a, b, spec, dtype).astype(out or dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _narrow_einsum(a, b, spec, dtype):
    return jnp.einsum(
        spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32
    )


def _narrow_einsum_fwd(a, b, spec, dtype):
    return _narrow_einsum(a, b, spec, dtype), (a, b)


def _narrow_einsum_bwd(spec, dtype, residuals, g):
    """Each operand's cotangent as one more narrow einsum: g with the other
    operand, summed over what the output lacks; in the operand's own dtype
    (a float32 kernel gets a float32 gradient, not a rounded one)."""
    a, b = residuals
    ins, out = spec.split("->")
    a_in, b_in = ins.split(",")
    g = g.astype(dtype)

    def grad(spec_, x, y, like):
        return jnp.einsum(
            spec_, x, y.astype(dtype), preferred_element_type=jnp.float32
        ).astype(like.dtype)

    return (
        grad(f"{out},{b_in}->{a_in}", g, b, a),
        grad(f"{a_in},{out}->{b_in}", a.astype(dtype), g, b),
    )


_narrow_einsum.defvjp(_narrow_einsum_fwd, _narrow_einsum_bwd)
