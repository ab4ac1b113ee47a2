"""Layers shared by the networks, and the shape-suffix legend used in model code.

Legend: B batch, L length, D width, H heads / height, W image width, K head dim,
V vocab, F hidden, C channels, Z latent.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """Maps a config string to a compute dtype (params always stay float32)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0):
    """Sinusoidal embedding of (integer or real) timesteps, as in Transformer/DDPM."""
    half = dim // 2
    freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
    args_BF = t_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
    return jnp.concatenate([jnp.sin(args_BF), jnp.cos(args_BF)], axis=-1)


def group_norm(channels: int, groups: int, dtype) -> nn.GroupNorm:
    """GroupNorm with the largest group count dividing `channels` (<= groups)."""
    # The largest group count dividing `channels`, so tiny test widths work.
    return nn.GroupNorm(num_groups=math.gcd(groups, channels), dtype=dtype)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, the time embedding added in between (DDPM)."""

    channels: int
    dropout: float
    norm_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC, emb_BD, *, train: bool):
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), dtype=self.dtype)
        h = nn.swish(group_norm(x_BHWC.shape[-1], self.norm_groups, self.dtype)(x_BHWC))
        h = conv(self.channels)(h)
        h = (
            h
            + nn.Dense(self.channels, dtype=self.dtype)(nn.swish(emb_BD))[:, None, None]
        )
        h = nn.swish(group_norm(self.channels, self.norm_groups, self.dtype)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.channels, kernel_init=nn.initializers.zeros)(h)
        if x_BHWC.shape[-1] != self.channels:
            x_BHWC = nn.Dense(self.channels, dtype=self.dtype)(x_BHWC)
        return x_BHWC + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels, residual (DDPM at 16x16)."""

    norm_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC):
        b, h, w, c = x_BHWC.shape
        y = group_norm(c, self.norm_groups, self.dtype)(x_BHWC)
        qkv = nn.Dense(3 * c, dtype=self.dtype)(y).reshape(b, h * w, 3, 1, c)
        q_BLHK, k_BLHK, v_BLHK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # jax.nn.dot_product_attention picks a fused kernel where the backend has one.
        out = jax.nn.dot_product_attention(q_BLHK, k_BLHK, v_BLHK)
        out = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros)(
            out.reshape(b, h, w, c)
        )
        return x_BHWC + out
