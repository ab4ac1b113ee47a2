"""Decoder-only Transformer LM (GPT-2 style, pre-norm) with rotary positions and an
explicit KV cache. Radford et al. 2019; Su et al. 2021 (RoPE); Shazeer 2020 (SwiGLU).

Params carry logical axis names ("vocab", "embed", "heads", "kv", "mlp") that
sharding.py maps onto mesh axes. Logits and the softmax run in float32.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import layers

Cache = list[dict[str, jax.Array]]  # per layer: k_BLHK, v_BLHK over max length


_INIT = nn.initializers.normal(0.02)
NORMS = ("rms", "layer")  # the `norm` field
MLPS = ("gelu", "swiglu")  # the `mlp` field


class Dense(nn.Module):
    """A bias-free projection of the trailing `len(in_axes)` axes onto
    `features`, its kernel's axes logically named `in_axes + out_axes`.

    Computed as one 2D matmul, [B*L, in] @ [in, out]: XLA:CPU runs the
    backward pass of a [B, L, D] @ [D, F] dot_general about 1.6x slower (its
    weight gradient contracts over two axes). Kernels keep heads outermost,
    so flattening them leaves a "heads"-sharded axis sharded in blocks."""

    features: tuple[int, ...]
    in_axes: tuple[str | None, ...]
    out_axes: tuple[str | None, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_axes)
        in_shape, lead = x.shape[-n_in:], x.shape[:-n_in]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(_INIT, self.in_axes + self.out_axes),
            in_shape + tuple(self.features),
        )
        size_in = math.prod(in_shape)
        y = x.reshape(-1, size_in).astype(self.dtype) @ kernel.reshape(
            size_in, -1
        ).astype(self.dtype)
        return y.reshape(lead + tuple(self.features))


def rope(x_BLHK: jax.Array, positions_BL: jax.Array, base: float = 10_000.0):
    """Rotates channel pairs (i, i + K/2) by position-dependent angles (RoPE)."""
    half = x_BLHK.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BLK = positions_BL[..., None].astype(jnp.float32) * freqs[None, None, :]
    sin, cos = jnp.sin(angles_BLK)[:, :, None], jnp.cos(angles_BLK)[:, :, None]
    x1, x2 = (
        x_BLHK[..., :half].astype(jnp.float32),
        x_BLHK[..., half:].astype(jnp.float32),
    )
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BLHK.dtype)


def _norm(kind: str, dtype, name: str):
    scale_init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
    if kind == "rms":
        return nn.RMSNorm(dtype=dtype, scale_init=scale_init, name=name)
    if kind == "layer":
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
        return nn.LayerNorm(
            dtype=dtype, scale_init=scale_init, bias_init=bias_init, name=name
        )
    raise ValueError(f"unknown model.norm {kind!r}; valid: {', '.join(NORMS)}")


class Block(nn.Module):
    num_heads: int
    embed_dim: int
    mlp_dim: int
    dropout: float
    norm: str
    mlp: str
    dtype: Any

    @nn.compact
    def __call__(self, x_BLD, positions_BL, cache, train: bool):
        head_dim = self.embed_dim // self.num_heads
        drop = nn.Dropout(self.dropout, deterministic=not train)
        h = _norm(self.norm, self.dtype, "attn_norm")(x_BLD)
        qkv = Dense(
            (self.num_heads, 3, head_dim),
            ("embed",),
            ("heads", None, "kv"),
            self.dtype,
            name="qkv",
        )(h)
        q_BLHK, k_BLHK, v_BLHK = (qkv[:, :, :, i] for i in range(3))
        q_BLHK, k_BLHK = rope(q_BLHK, positions_BL), rope(k_BLHK, positions_BL)
        if cache is None:
            # is_causal lets XLA/cuDNN use a fused causal kernel where one exists.
            out_BLHK = jax.nn.dot_product_attention(
                q_BLHK, k_BLHK, v_BLHK, is_causal=True
            )
        else:  # write this chunk at its positions, attend over the whole cache
            start = positions_BL[0, 0]
            k_all = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_BLHK, start, 1)
            v_all = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_BLHK, start, 1)
            cache = {"k": k_all, "v": v_all}
            key_pos = jnp.arange(k_all.shape[1])
            mask = key_pos[None, None, None, :] <= positions_BL[:, None, :, None]
            out_BLHK = jax.nn.dot_product_attention(q_BLHK, k_all, v_all, mask=mask)
        out_BLD = Dense(
            (self.embed_dim,), ("heads", "kv"), ("embed",), self.dtype, name="attn_out"
        )(out_BLHK)
        x_BLD = x_BLD + drop(out_BLD)

        h = _norm(self.norm, self.dtype, "mlp_norm")(x_BLD)
        mlp_in = functools.partial(
            Dense, (self.mlp_dim,), ("embed",), ("mlp",), self.dtype
        )
        if self.mlp == "swiglu":
            gate_BLF = mlp_in(name="gate")(h)
            up_BLF = mlp_in(name="up")(h)
            h_BLF = nn.silu(gate_BLF) * up_BLF
        elif self.mlp == "gelu":
            h_BLF = nn.gelu(mlp_in(name="up")(h))
        else:
            raise ValueError(
                f"unknown model.mlp {self.mlp!r}; valid: {', '.join(MLPS)}"
            )
        out_BLD = Dense(
            (self.embed_dim,), ("mlp",), ("embed",), self.dtype, name="down"
        )(h_BLF)
        return x_BLD + drop(out_BLD), cache


class Transformer(nn.Module):
    vocab_size: int
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 256
    mlp_dim: int = 1024
    dropout: float = 0.0
    norm: str = "rms"  # rms | layer
    mlp: str = "gelu"  # gelu | swiglu
    tie_embeddings: bool = True
    remat: bool = False  # recompute each block in the backward pass
    dtype: str = "float32"

    @nn.compact
    def __call__(
        self,
        tokens_BL,
        positions_BL=None,
        cache: Cache | None = None,
        *,
        train: bool = False,
    ):
        """Logits (float32) and the updated cache (None when `cache` is None)."""
        dtype = layers.compute_dtype(self.dtype)
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(
                jnp.arange(tokens_BL.shape[1]), tokens_BL.shape
            )
        embed = nn.Embed(
            self.vocab_size,
            self.embed_dim,
            dtype=dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")
            ),
        )
        x_BLD = nn.Dropout(self.dropout, deterministic=not train)(embed(tokens_BL))
        # A no-op unless a "perturbations" collection is passed: lets tests take
        # gradients with respect to the embedded inputs (causality).
        x_BLD = self.perturb("embedded", x_BLD)
        block = nn.remat(Block, static_argnums=(4,)) if self.remat else Block
        new_cache = []
        for i in range(self.num_layers):
            x_BLD, layer_cache = block(
                self.num_heads,
                self.embed_dim,
                self.mlp_dim,
                self.dropout,
                self.norm,
                self.mlp,
                dtype,
                name=f"block_{i}",
            )(x_BLD, positions_BL, None if cache is None else cache[i], train)
            new_cache.append(layer_cache)
        x_BLD = _norm(self.norm, dtype, "final_norm")(x_BLD)
        if self.tie_embeddings:  # float32 logits, whatever the compute dtype
            b, length, _ = x_BLD.shape
            logits_BLV = (
                x_BLD.reshape(b * length, -1).astype(jnp.float32)
                @ embed.embedding.T.astype(jnp.float32)
            ).reshape(b, length, -1)
        else:
            logits_BLV = Dense(
                (self.vocab_size,), ("embed",), ("vocab",), jnp.float32, name="unembed"
            )(x_BLD.astype(jnp.float32))
        return logits_BLV.astype(jnp.float32), (None if cache is None else new_cache)


def init_cache(model: Transformer, batch: int, max_len: int) -> Cache:
    """Zeroed KV cache for `batch` sequences of up to `max_len` tokens."""
    head_dim = model.embed_dim // model.num_heads
    shape = (batch, max_len, model.num_heads, head_dim)
    dtype = layers.compute_dtype(model.dtype)
    return [
        {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
        for _ in range(model.num_layers)
    ]
