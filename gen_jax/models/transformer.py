"""Decoder-only Transformer LM (pre-norm) with rotary positions and an explicit KV
cache, shaped to load published decoders (Llama, Mistral, Qwen2/3): grouped-query
attention, q/k/v biases, q/k RMSNorm, untied unembedding, llama3 RoPE scaling.
Radford et al. 2019; Shazeer 2020 (SwiGLU); attention.py holds the attention math.

Every transformer block here and in dit.py is built from one frozen `BlockConfig`
and the sub-layers below (`norm_layer`, `self_attention`, `feed_forward`), which
create their params in the calling block's scope: the LM's `Block` is the plain
pre-norm block, the DiT's block adds its adaLN modulation around the same calls,
and a conditioning sub-layer (cross-attention) is one more call in a block, its
inputs one more argument through `block_stack`.

Params carry logical axis names ("vocab", "embed", "heads", "kv", "mlp") that
sharding.py maps onto mesh axes. Logits and the softmax run in float32.
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


Dense = layers.Dense  # the old import path (tests/test_bench.py)


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


class Block(nn.Module):
    """The LM's pre-norm block: x + attention(norm(x)), then x + mlp(norm(x)),
    with RoPE and causal (or packed-segment) attention."""

    config: BlockConfig

    @nn.compact
    def __call__(self, x_BLD, cache, positions_BL, freqs_K, mask):
        """(x, this layer's updated cache); the signature `block_stack` needs."""
        cfg = self.config
        drop = nn.Dropout(cfg.dropout, deterministic=not cfg.train)
        h_BLD = norm_layer(cfg, "attn_norm")(x_BLD)
        out_BLD, cache = self_attention(cfg, h_BLD, mask, positions_BL, freqs_K, cache)
        x_BLD = x_BLD + drop(out_BLD)
        out_BLD = feed_forward(cfg, norm_layer(cfg, "mlp_norm")(x_BLD))
        return x_BLD + drop(out_BLD), cache


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


class Transformer(nn.Module):
    vocab_size: int
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 0  # grouped-query attention; 0: num_heads (multi-head)
    head_dim: int = 0  # 0: embed_dim // num_heads
    embed_dim: int = 256
    mlp_dim: int = 1024
    dropout: float = 0.0
    norm: str = "rms"  # rms | layer
    norm_eps: float = 1e-6
    mlp: str = "gelu"  # gelu | swiglu
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    rope_theta: float = 10_000.0
    # Llama 3.1 RoPE scaling: (factor, low_freq_factor, high_freq_factor,
    # original_max_len); empty = none.
    rope_llama3: tuple = ()
    tie_embeddings: bool = True
    remat: bool = False  # recompute each block in the backward pass
    # What remat keeps: "nothing" (recompute all), "dots" (keep matmul outputs
    # without batch dims), "everything".
    remat_policy: str = "nothing"
    # One block `nn.scan`ned over a leading "layers" axis of its params (and of
    # the KV cache, after the slot axis): XLA compiles the block once, so
    # compile time stays flat in depth. Without remat it keeps the "dots".
    scan_layers: bool = False
    dtype: str = "float32"

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.embed_dim // self.num_heads

    def block_config(self, *, train: bool = False, cache_window: int = 0):
        """The BlockConfig of this model's blocks."""
        return BlockConfig(
            num_heads=self.num_heads,
            num_kv_heads=self.kv_heads,
            head_dim=self.head_size,
            embed_dim=self.embed_dim,
            mlp_dim=self.mlp_dim,
            norm=self.norm,
            norm_eps=self.norm_eps,
            mlp=self.mlp,
            qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm,
            dropout=self.dropout,
            dtype=layers.compute_dtype(self.dtype),
            train=train,
            cache_window=cache_window,
        )

    @nn.compact
    def __call__(
        self,
        tokens_BL,
        positions_BL=None,
        cache: Cache | None = None,
        *,
        segment_ids_BL=None,
        cache_window: int = 0,
        train: bool = False,
    ):
        """Logits (float32) and the updated cache (None when `cache` is None).

        Packed rows pass `segment_ids_BL` (tokens attend only within their
        segment) and per-segment `positions_BL`; `cache_window` is BlockConfig's."""
        config = self.block_config(train=train, cache_window=cache_window)
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(
                jnp.arange(tokens_BL.shape[1]), tokens_BL.shape
            )
        embed = nn.Embed(
            self.vocab_size,
            self.embed_dim,
            dtype=config.dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")
            ),
        )
        x_BLD = nn.Dropout(self.dropout, deterministic=not train)(embed(tokens_BL))
        # A no-op unless a "perturbations" collection is passed: lets tests take
        # gradients with respect to the embedded inputs (causality).
        x_BLD = self.perturb("embedded", x_BLD)
        x_BLD, new_cache = block_stack(
            Block,
            config,
            x_BLD,
            cache,
            positions_BL,
            attention.rope_frequencies(
                self.head_size, self.rope_theta, self.rope_llama3
            ),
            attention.attention_mask(positions_BL, segment_ids_BL),
            num_layers=self.num_layers,
            scan_layers=self.scan_layers,
            remat=self.remat,
            remat_policy=self.remat_policy,
        )
        x_BLD = norm_layer(config, "final_norm")(x_BLD)
        if self.tie_embeddings:  # float32 logits, whatever the compute dtype
            b, length, _ = x_BLD.shape
            logits_BLV = (
                x_BLD.reshape(b * length, -1).astype(jnp.float32)
                @ embed.embedding.T.astype(jnp.float32)
            ).reshape(b, length, -1)
        else:
            logits_BLV = layers.Dense(
                (self.vocab_size,), ("embed",), ("vocab",), jnp.float32, name="unembed"
            )(x_BLD.astype(jnp.float32))
        return logits_BLV.astype(jnp.float32), (None if cache is None else new_cache)


def cache_spec(model: Transformer, batch, max_len: int):
    """The KV cache's ShapeDtypeStructs for `batch` sequences (a symbolic dim
    is fine) of up to `max_len` tokens, sized by the kv heads (grouped-query
    attention stores num_heads / num_kv_heads less): a list of per-layer
    {k, v} [B, T, G, K], or for a scanned model one {k, v} [B, layers, T, G, K]."""
    dtype = layers.compute_dtype(model.dtype)
    shape = (max_len, model.kv_heads, model.head_size)
    if model.scan_layers:
        leaf = jax.ShapeDtypeStruct((batch, model.num_layers, *shape), dtype)
        return {"k": leaf, "v": leaf}
    leaf = jax.ShapeDtypeStruct((batch, *shape), dtype)
    return [{"k": leaf, "v": leaf} for _ in range(model.num_layers)]


def init_cache(model: Transformer, batch: int, max_len: int) -> Cache:
    """A zeroed KV cache (`cache_spec`'s shapes)."""
    return jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), cache_spec(model, batch, max_len)
    )


def stack_layers(params: dict, num_layers: int) -> dict:
    """Unrolled params (block_0 ... block_{n-1}) -> the scanned layout (one
    "blocks" entry, each leaf stacked on a leading layers axis)."""
    out = {k: v for k, v in params.items() if not k.startswith("block_")}
    out["blocks"] = jax.tree.map(
        lambda *xs: jnp.stack(xs), *(params[f"block_{i}"] for i in range(num_layers))
    )
    return out


def unstack_layers(params: dict) -> dict:
    """The scanned layout -> unrolled params (`stack_layers` undone)."""
    out = {k: v for k, v in params.items() if k != "blocks"}
    num_layers = jax.tree.leaves(params["blocks"])[0].shape[0]
    for i in range(num_layers):
        out[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["blocks"])
    return out
