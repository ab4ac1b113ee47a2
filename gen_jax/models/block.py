"""The transformer block's parts, shared by every block (the LM's in
transformer.py, the DiT's in dit.py, the UNet's text attention): one frozen
`BlockConfig`, the sub-layers `norm_layer`, `self_attention`, `cross_attention`
and `feed_forward`, which create their params in the calling block's scope, and
`block_stack`, which unrolls or scans any block. Cross-attention is one more
call in a block, its text tokens and mask two more arguments through
`block_stack`; `text_inputs` checks a denoiser's text fields against its call.
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
# A denoiser's `text_conditioning` field: "cross" is cross-attention on the
# text tokens (PixArt-alpha, Stable Diffusion). SD3's joint attention (MMDiT)
# would be "joint"; it is not built yet.
TEXT_CONDITIONINGS = ("none", "cross")


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


def cross_attention(
    config: BlockConfig,
    h_BLD: jax.Array,
    context_BSD: jax.Array,
    context_mask_BS: jax.Array,
) -> jax.Array:
    """Multi-head cross-attention of the caller's block (params "cross_q",
    "cross_k", "cross_v", "cross_out"): queries from `h_BLD`, keys and values
    from the context tokens whose mask is true. The context may have any width
    (the k and v projections read it). A row without tokens (the null caption)
    gives 0, as does every row at init: "cross_out" starts at zero (PixArt)."""
    q_BLHK = _heads(config, config.num_heads, "cross_q")(h_BLD)
    k_BSGK = _heads(config, config.num_kv_heads, "cross_k")(context_BSD)
    v_BSGK = _heads(config, config.num_kv_heads, "cross_v")(context_BSD)
    if config.qk_norm:
        q_BLHK = norm_layer(config, "cross_q_norm", "kv")(q_BLHK)
        k_BSGK = norm_layer(config, "cross_k_norm", "kv")(k_BSGK)
    mask_BS = context_mask_BS.astype(bool)
    some_B = jnp.any(mask_BS, axis=1)
    # A row without tokens attends to all of them and is zeroed after: a fully
    # masked softmax is NaN in fused kernels (and in their gradients).
    mask_B11S = (mask_BS | ~some_B[:, None])[:, None, None, :]
    out_BLHK = attention.attention(q_BLHK, k_BSGK, v_BSGK, mask_B11S)
    out_BLHK = jnp.where(some_B[:, None, None, None], out_BLHK, 0)
    out = layers.Dense(
        (config.embed_dim,),
        ("heads", "kv"),
        ("embed",),
        config.dtype,
        kernel_init=nn.initializers.zeros,
        name="cross_out",
    )
    return out(out_BLHK)


def text_inputs(
    kind: str, text_dim: int, text_BSD: jax.Array | None, text_mask_BS=None
) -> tuple[jax.Array, jax.Array] | None:
    """A denoiser's text arguments checked against its `text_conditioning` and
    `text_dim` fields: (features, boolean mask; all true when None), or None
    without text conditioning."""
    if kind == "joint":
        raise ValueError(
            "model.text_conditioning='joint' (SD3's MMDiT joint attention) is "
            f"not built yet; valid: {', '.join(TEXT_CONDITIONINGS)}"
        )
    if kind not in TEXT_CONDITIONINGS:
        raise ValueError(
            f"unknown model.text_conditioning {kind!r}; valid: "
            f"{', '.join(TEXT_CONDITIONINGS)}"
        )
    if kind == "none":
        if text_BSD is not None:
            raise ValueError("text given to a model with text_conditioning='none'")
        return None
    if text_BSD is None or text_BSD.ndim != 3 or text_BSD.shape[-1] != text_dim:
        got = None if text_BSD is None else text_BSD.shape
        raise ValueError(
            f"model.text_conditioning={kind!r} needs text features "
            f"[batch, length, model.text_dim={text_dim}]; got {got}"
        )
    if text_mask_BS is None:
        return text_BSD, jnp.ones(text_BSD.shape[:2], bool)
    if text_mask_BS.shape != text_BSD.shape[:2]:
        raise ValueError(
            f"text_mask_BS {text_mask_BS.shape} does not match text_BSD "
            f"{text_BSD.shape}"
        )
    return text_BSD, text_mask_BS.astype(bool)


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
