"""Decoder-only Transformer LM (pre-norm) with rotary positions and an explicit KV
cache, shaped to load published decoders (Llama, Mistral, Qwen2/3): grouped-query
attention, q/k/v biases, q/k RMSNorm, untied unembedding, llama3 RoPE scaling.
Radford et al. 2019; Shazeer 2020 (SwiGLU); attention.py holds the attention math.

Its `Block` is the plain pre-norm block built from block.py's `BlockConfig`
and sub-layers, which the DiT's block (dit.py) shares.

Params carry logical axis names ("vocab", "embed", "heads", "kv", "mlp") that
sharding.py maps onto mesh axes. Logits and the softmax run in float32.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import attention, layers, precision
from gen_jax.models.block import (
    BlockConfig,
    Cache,
    block_stack,
    feed_forward,
    norm_layer,
    self_attention,
)


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
            dtype=precision.compute_dtype(self.dtype),
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
        hidden: bool = False,
    ):
        """Logits (float32) and the updated cache (None when `cache` is None).

        Packed rows pass `segment_ids_BL` (tokens attend only within their
        segment) and per-segment `positions_BL`; `cache_window` is BlockConfig's.
        `hidden`: the final norm's output [B, L, D] (float32) in place of the
        logits, a text encoder's features (families/text_encoder.py)."""
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
        x_BLD = norm_layer(config, "final_norm")(x_BLD).astype(jnp.float32)
        out = x_BLD if hidden else self._logits(x_BLD, embed)
        return out, (None if cache is None else new_cache)

    def _logits(self, x_BLD, embed: nn.Embed):
        """Float32 logits, whatever the compute dtype (a narrow one's inputs,
        float32 accumulated): through the embedding (tied) or "unembed"."""
        dtype = precision.compute_dtype(self.dtype)  # f32 accumulated, f32 out
        if self.tie_embeddings:
            b, length, _ = x_BLD.shape
            flat_ND = x_BLD.reshape(b * length, -1)
            logits_NV = precision.einsum(
                "nd,vd->nv", flat_ND, embed.embedding, dtype, jnp.float32
            )
            return logits_NV.reshape(b, length, -1)
        return layers.Dense(
            (self.vocab_size,),
            ("embed",),
            ("vocab",),
            dtype,
            out_dtype=jnp.float32,
            name="unembed",
        )(x_BLD)


def cache_spec(model: Transformer, batch, max_len: int):
    """The KV cache's ShapeDtypeStructs for `batch` sequences (a symbolic dim
    is fine) of up to `max_len` tokens, sized by the kv heads (grouped-query
    attention stores num_heads / num_kv_heads less): a list of per-layer
    {k, v} [B, T, G, K], or for a scanned model one {k, v} [B, layers, T, G, K]."""
    dtype = precision.compute_dtype(model.dtype)
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
