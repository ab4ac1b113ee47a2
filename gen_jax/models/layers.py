"""Layers shared by the networks, and the shape-suffix legend used in model code.

Legend: B batch, L length, D width, H heads / height, W image width, K head dim,
V vocab, F hidden, C channels, Z latent.
"""

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """Maps a config string to a compute dtype (params always stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]
