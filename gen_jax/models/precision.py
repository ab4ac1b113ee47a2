"""The mixed-precision policy: a config's dtype name, and contractions computed
narrow (bf16 x bf16 -> float32) in the forward and the backward pass alike.
Params, optimizer state, losses and EMA stay float32 elsewhere."""

import functools

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """Maps a config string to a compute dtype (params always stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype, out=None) -> jax.Array:
    """Two-operand `jnp.einsum` computed in `dtype`, returned in `out` (default
    `dtype`; float32 keeps the accumulator's precision, e.g. logits). In
    float32 as it is. Narrower (bfloat16, float16): the operands cast to it and
    accumulated in float32 (`preferred_element_type`), forward and backward
    alike; XLA:CPU's YNNPACK runs bf16 x bf16 -> f32 natively, but upcasts a
    bf16 -> bf16 dot with converts, and JAX's own transpose of a mixed dot
    would make the backward's dots float32. Every index of an operand must
    appear in the other operand or the output (true of matmuls)."""
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(spec, a.astype(dtype), b.astype(dtype)).astype(out or dtype)
    return _narrow_einsum(a, b, spec, jnp.dtype(dtype)).astype(out or dtype)


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
