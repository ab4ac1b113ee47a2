"""The transformer block's parts, shared by every block (the LM's in
transformer.py, the DiT's in dit.py): one frozen `BlockConfig`, the sub-layers
`norm_layer`, `self_attention` and `feed_forward`, which create their params in
the calling block's scope, and `block_stack`, which unrolls or scans any block.
A conditioning sub-layer (cross-attention) is one more call in a block, its
inputs one more argument through `block_stack`.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import attention, layers

# Per layer {k, v} [B, T, G, K] over the max length (G kv heads); scanned
# models: one {k, v} [B, layers, T, G, K] (`cache_spec`).
Cache = list[dict[str, jax.Array]] | dict[str, jax.Array]


NORMS = ("rms", "layer")  # the `norm` field
REMAT_POLICIES = {
    "nothing": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything": jax.checkpoint_policies.everything_saveable,
}
MLPS = ("gelu", "swiglu")  # the `mlp` field


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One transformer block: its sizes, layer kinds and compute dtype, plus the
    two per-call settings (`train`, `cache_window`). Models build it from their
    own fields (`Transformer.block_config`, `DiT.block_config`)."""

    num_heads: int
    num_kv_heads: int  # each shared by num_heads / num_kv_heads query heads (GQA)
    head_dim: int
    embed_dim: int
    mlp_dim: int
    norm: str = "rms"  # NORMS
    norm_eps: float = 1e-6
    mlp: str = "gelu"  # MLPS
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    dropout: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; params stay float32
    train: bool = False  # dropout on
    # Decoding: attend over the cache's first `cache_window` positions only
    # (0: all). A server picks the smallest window past every slot's position,
    # so a step reads the part of the cache in use, not the whole context.
    cache_window: int = 0

    def __post_init__(self):
        for field, valid in (("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, field) not in valid:
                raise ValueError(
                    f"unknown model.{field} {getattr(self, field)!r}; "
                    f"valid: {', '.join(valid)}"
                )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} is not a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}"
            )


def norm_layer(config: BlockConfig, name: str, axis: str = "embed") -> nn.Module:
    """The config's RMSNorm or LayerNorm over an `axis`-named last dimension."""
    scale_init = nn.with_logical_partitioning(nn.initializers.ones, (axis,))
    kw = {"epsilon": config.norm_eps, "dtype": config.dtype, "name": name}
    if config.norm == "rms":
        return nn.RMSNorm(scale_init=scale_init, **kw)
    bias_init = nn.with_logical_partitioning(nn.initializers.zeros, (axis,))
    return nn.LayerNorm(scale_init=scale_init, bias_init=bias_init, **kw)


def _heads(config: BlockConfig, num_heads: int, name: str) -> layers.Dense:
    """A projection of [.., D] onto [.., heads, K] (q, k or v)."""
    return layers.Dense(
        (num_heads, config.head_dim),
        ("embed",),
        ("heads", "kv"),
        config.dtype,
        use_bias=config.qkv_bias,
        name=name,
    )


def self_attention(
    config: BlockConfig,
    h_BLD: jax.Array,
    mask: jax.Array | None,
    positions_BL: jax.Array | None = None,
    freqs_K: jax.Array | None = None,
    cache: dict | None = None,
) -> tuple[jax.Array, dict | None]:
    """Multi-head self-attention of the caller's block (params "q", "k", "v",
    "attn_out"): (output, the updated cache). `mask` None is causal; `freqs_K`
    None leaves out RoPE; with `cache` the new keys are written at
    `positions_BL` and attended with the earlier ones."""
    q_BLHK = _heads(config, config.num_heads, "q")(h_BLD)
    k_BLGK = _heads(config, config.num_kv_heads, "k")(h_BLD)
    v_BLGK = _heads(config, config.num_kv_heads, "v")(h_BLD)
    if config.qk_norm:  # Qwen3: RMSNorm over each head's channels, before RoPE
        q_BLHK = norm_layer(config, "q_norm", "kv")(q_BLHK)
        k_BLGK = norm_layer(config, "k_norm", "kv")(k_BLGK)
    if freqs_K is not None:
        q_BLHK = attention.rope(q_BLHK, positions_BL, freqs_K)
        k_BLGK = attention.rope(k_BLGK, positions_BL, freqs_K)
    if cache is not None:
        k_BLGK, v_BLGK, mask, cache = attention.write_cache(
            cache, k_BLGK, v_BLGK, positions_BL, config.cache_window
        )
    out_BLHK = attention.attention(q_BLHK, k_BLGK, v_BLGK, mask)
    out = layers.Dense(
        (config.embed_dim,), ("heads", "kv"), ("embed",), config.dtype, name="attn_out"
    )
    return out(out_BLHK), cache


def feed_forward(config: BlockConfig, h_BLD: jax.Array) -> jax.Array:
    """The block's MLP (params "up", "down" and for SwiGLU "gate")."""
    mlp_in = functools.partial(
        layers.Dense, (config.mlp_dim,), ("embed",), ("mlp",), config.dtype
    )
    if config.mlp == "swiglu":
        gate_BLF = mlp_in(name="gate")(h_BLD)
        up_BLF = mlp_in(name="up")(h_BLD)
        h_BLF = nn.silu(gate_BLF) * up_BLF
    else:
        h_BLF = nn.gelu(mlp_in(name="up")(h_BLD))
    down = layers.Dense(
        (config.embed_dim,), ("mlp",), ("embed",), config.dtype, name="down"
    )
    return down(h_BLF)


def block_stack(
    block_cls: type[nn.Module],
    config: BlockConfig,
    x_BLD: jax.Array,
    cache: Cache | None,
    *shared,
    num_layers: int,
    scan_layers: bool,
    remat: bool,
    remat_policy: str,
):
    """`num_layers` `block_cls(config)` blocks applied in turn, each called as
    `block(x_BLD, its cache, *shared) -> (x_BLD, its cache)`, unrolled
    (block_0 ...) or `nn.scan`ned (one "blocks" entry stacked on a "layers"
    axis; the cache then {k, v} [B, layers, T, G, K]): (x, the updated cache).
    Called from a parent's compact method (the Transformer's, the DiT's), so
    the blocks are its submodules."""
    # A scanned block saves only its matmul outputs for the backward pass even
    # without remat: stacking every intermediate in the loop was slower on
    # XLA:CPU than keeping the "dots" (and than unrolling).
    policy = remat_policy if remat else ("dots" if scan_layers else "")
    if policy:
        if policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown model.remat_policy {policy!r}; valid: "
                f"{', '.join(REMAT_POLICIES)}"
            )
        block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[policy])
    if scan_layers:
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(1,) + (nn.broadcast,) * len(shared),
            out_axes=1,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        return scanned(config, name="blocks")(x_BLD, cache, *shared)
    new_cache = []
    for i in range(num_layers):
        layer_cache = None if cache is None else cache[i]
        x_BLD, layer_cache = block_cls(config, name=f"block_{i}")(
            x_BLD, layer_cache, *shared
        )
        new_cache.append(layer_cache)
    return x_BLD, new_cache
