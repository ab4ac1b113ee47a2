"""Decoder-only Transformer LM (pre-norm) with rotary positions and an explicit KV
cache, shaped to load published decoders (Llama, Mistral, Qwen2/3): grouped-query
attention, q/k/v biases, q/k RMSNorm, untied unembedding, llama3 RoPE scaling.
Radford et al. 2019; Su et al. 2021 (RoPE); Shazeer 2020 (SwiGLU); Ainslie et al.
2023 (GQA).

Params carry logical axis names ("vocab", "embed", "heads", "kv", "mlp") that
sharding.py maps onto mesh axes. Logits and the softmax run in float32.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import layers

# Per layer {k, v} [B, T, G, K] over the max length (G kv heads); scanned
# models: one {k, v} [B, layers, T, G, K] (`cache_spec`).
Cache = list[dict[str, jax.Array]] | dict[str, jax.Array]


_INIT = nn.initializers.normal(0.02)
NORMS = ("rms", "layer")  # the `norm` field
REMAT_POLICIES = {
    "nothing": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything": jax.checkpoint_policies.everything_saveable,
}
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
    use_bias: bool = False

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
        y = y.reshape(lead + tuple(self.features))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes),
                tuple(self.features),
            )
            y = y + bias.astype(self.dtype)[(None,) * len(lead)]
        return y


def rope_frequencies(head_dim: int, theta: float, llama3: tuple = ()) -> jax.Array:
    """The K/2 rotation frequencies theta^(-2i/K); `llama3` = (factor,
    low_freq_factor, high_freq_factor, original_max_len) stretches the long
    wavelengths as Llama 3.1 does (no scaling when empty)."""
    half = head_dim // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    if not llama3:
        return freqs
    factor, low, high, original = llama3
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    mid = (1 - smooth) * freqs / factor + smooth * freqs
    return jnp.where(
        wavelen > original / low,
        freqs / factor,
        jnp.where(wavelen < original / high, freqs, mid),
    )


def rope(x_BLHK: jax.Array, positions_BL: jax.Array, freqs_K: jax.Array):
    """Rotates channel pairs (i, i + K/2) by position-dependent angles (RoPE);
    the pairing is Hugging Face's `rotate_half`."""
    half = x_BLHK.shape[-1] // 2
    angles_BLK = positions_BL[..., None].astype(jnp.float32) * freqs_K[None, None, :]
    sin, cos = jnp.sin(angles_BLK)[:, :, None], jnp.cos(angles_BLK)[:, :, None]
    x1, x2 = (
        x_BLHK[..., :half].astype(jnp.float32),
        x_BLHK[..., half:].astype(jnp.float32),
    )
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BLHK.dtype)


def _norm(kind: str, eps: float, dtype, name: str, axis: str = "embed"):
    scale_init = nn.with_logical_partitioning(nn.initializers.ones, (axis,))
    if kind == "rms":
        return nn.RMSNorm(epsilon=eps, dtype=dtype, scale_init=scale_init, name=name)
    if kind == "layer":
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros, (axis,))
        return nn.LayerNorm(
            epsilon=eps,
            dtype=dtype,
            scale_init=scale_init,
            bias_init=bias_init,
            name=name,
        )
    raise ValueError(f"unknown model.norm {kind!r}; valid: {', '.join(NORMS)}")


def attention_mask(
    positions_BL: jax.Array, segment_ids_BL: jax.Array | None
) -> jax.Array | None:
    """[B, 1, L, L] causal-and-same-segment mask for packed rows (None without
    segments: the attention then uses its fused causal path). Causality is by
    index, so per-segment positions may restart at 0."""
    if segment_ids_BL is None:
        return None
    length = positions_BL.shape[1]
    causal_LL = jnp.tril(jnp.ones((length, length), bool))
    same_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
    return (causal_LL[None] & same_BLL)[:, None]


def attention(q_BLHK, k_BTGK, v_BTGK, mask_B1LT=None, *, impl: str = "") -> jax.Array:
    """Grouped-query attention (H query heads share G kv heads), causal when
    `mask_B1LT` is None. impl "fused": `jax.nn.dot_product_attention` (cuDNN's
    fused kernel on GPU); "xla": heads moved in front of the sequence, then
    batched matmuls, which XLA:CPU runs faster (forward + backward of one
    lm_pydoc-sized layer: 52.6 vs 68.6 ms). Default: "xla" on CPU, "fused"
    elsewhere."""
    impl = impl or ("xla" if jax.default_backend() == "cpu" else "fused")
    if impl == "fused":
        return jax.nn.dot_product_attention(
            q_BLHK, k_BTGK, v_BTGK, mask=mask_B1LT, is_causal=mask_B1LT is None
        )
    if impl != "xla":
        raise ValueError(f"unknown attention impl {impl!r}; valid: fused, xla")
    b, length, heads, dim = q_BLHK.shape
    groups, keys = k_BTGK.shape[2], k_BTGK.shape[1]
    # [B, G, R, L, K]: the R query heads of a group share its keys.
    q_BGRLK = q_BLHK.reshape(b, length, groups, heads // groups, dim).transpose(
        0, 2, 3, 1, 4
    )
    k_BGTK, v_BGTK = (x.transpose(0, 2, 1, 3) for x in (k_BTGK, v_BTGK))
    if mask_B1LT is not None:
        out_BGRLK = _attend(q_BGRLK, k_BGTK, v_BGTK, mask_B1LT[:, :, None])
    else:
        # Causal: query block i sees only the key prefix up to its end, so
        # splitting the queries in two skips a quarter of the scores (the
        # masked upper-right block). Forward + backward at the LM reference
        # shape: 67 vs 90 ms per layer; more blocks cost more than they skip.
        blocks = 2 if length == keys and length % 2 == 0 and length >= 128 else 1
        size = length // blocks
        outs = []
        for i in range(blocks):
            end = keys - length + (i + 1) * size
            rows = np.arange(end - size, end)[:, None]
            causal_LT = jnp.asarray(rows >= np.arange(end)[None])
            outs.append(
                _attend(
                    q_BGRLK[:, :, :, i * size : (i + 1) * size],
                    k_BGTK[:, :, :end],
                    v_BGTK[:, :, :end],
                    causal_LT,
                )
            )
        out_BGRLK = outs[0] if blocks == 1 else jnp.concatenate(outs, axis=3)
    return out_BGRLK.transpose(0, 3, 1, 2, 4).reshape(b, length, heads, dim)


def _attend(q_BGRLK, k_BGTK, v_BGTK, mask) -> jax.Array:
    """Softmax attention of [B, G, R, L, K] queries over [B, G, T, K] keys;
    `mask` broadcasts against the [B, G, R, L, T] scores."""
    b, groups, r, length, dim = q_BGRLK.shape
    keys = k_BGTK.shape[2]
    # The R heads stack along the query axis: every matmul is a plain batched one.
    q_BGQK = q_BGRLK.reshape(b, groups, r * length, dim)
    logits_BGRLT = jnp.einsum("bgqk,bgtk->bgqt", q_BGQK, k_BGTK).reshape(
        b, groups, r, length, keys
    )
    logits_BGRLT = logits_BGRLT.astype(jnp.float32) / np.float32(np.sqrt(dim))
    # The lowest finite score, not -inf: a fully masked row (padding) averages
    # instead of giving NaN, as jax.nn.dot_product_attention does.
    logits_BGRLT = jnp.where(mask, logits_BGRLT, jnp.finfo(jnp.float32).min)
    probs_BGRLT = jax.nn.softmax(logits_BGRLT, axis=-1).astype(v_BGTK.dtype)
    probs_BGQT = probs_BGRLT.reshape(b, groups, r * length, keys)
    out_BGQK = jnp.einsum("bgqt,bgtk->bgqk", probs_BGQT, v_BGTK)
    return out_BGQK.reshape(b, groups, r, length, dim)


def _modulate(h, shift, scale):
    """adaLN's h (1 + scale) + shift (h itself without conditioning)."""
    return h if shift is None else h * (1 + scale) + shift


def _gated(gate, out):
    return out if gate is None else gate * out


class Block(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    embed_dim: int
    mlp_dim: int
    dropout: float
    norm: str
    norm_eps: float
    mlp: str
    qkv_bias: bool
    qk_norm: bool
    dtype: Any
    # Decoding: attend over the cache's first `cache_window` positions only
    # (0: all). A server picks the smallest window past every slot's position,
    # so a step reads the part of the cache in use, not the whole context.
    cache_window: int = 0
    train: bool = False
    # Rotary positions on q and k (a DiT adds fixed 2D positions to its patch
    # tokens instead).
    rope: bool = True
    # adaLN-Zero (Peebles & Xie 2023, DiT): a conditioning vector sets a
    # shift and scale after each norm and a gate on each branch, from a
    # zero-initialised projection, so the block starts as the identity.
    adaln: bool = False

    @nn.compact
    def __call__(self, x_BLD, cache, positions_BL, freqs_K, mask, cond_BD=None):
        """(x, this layer's updated cache); the signature `nn.scan` needs (the
        carry, then what is scanned over, then what is broadcast). `cond_BD`:
        the adaLN conditioning (a DiT's time and label embedding)."""
        drop = nn.Dropout(self.dropout, deterministic=not self.train)
        if self.adaln:
            mods = nn.Dense(
                6 * self.embed_dim,
                dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.zeros, ("embed", "mlp")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                name="adaln",
            )(nn.silu(cond_BD))[:, None]
            shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mods, 6, -1)
        else:
            shift1 = scale1 = gate1 = shift2 = scale2 = gate2 = None
        h = _norm(self.norm, self.norm_eps, self.dtype, "attn_norm")(x_BLD)
        h = _modulate(h, shift1, scale1)
        proj = functools.partial(
            Dense, in_axes=("embed",), dtype=self.dtype, use_bias=self.qkv_bias
        )
        q_BLHK = proj(
            (self.num_heads, self.head_dim), out_axes=("heads", "kv"), name="q"
        )(h)
        k_BLGK, v_BLGK = (
            proj((self.num_kv_heads, self.head_dim), out_axes=("heads", "kv"), name=n)(
                h
            )
            for n in ("k", "v")
        )
        if self.qk_norm:  # Qwen3: RMSNorm over each head's channels, before RoPE
            q_BLHK = _norm(self.norm, self.norm_eps, self.dtype, "q_norm", "kv")(q_BLHK)
            k_BLGK = _norm(self.norm, self.norm_eps, self.dtype, "k_norm", "kv")(k_BLGK)
        if self.rope:
            q_BLHK = rope(q_BLHK, positions_BL, freqs_K)
            k_BLGK = rope(k_BLGK, positions_BL, freqs_K)
        if cache is not None:  # write each row's chunk at its start, attend over all
            # Rows may sit at different positions (a server's decode slots).
            write = jax.vmap(
                lambda c, x, start: jax.lax.dynamic_update_slice_in_dim(c, x, start, 0)
            )
            k_BLGK = write(cache["k"], k_BLGK, positions_BL[:, 0])
            v_BLGK = write(cache["v"], v_BLGK, positions_BL[:, 0])
            cache = {"k": k_BLGK, "v": v_BLGK}
            if self.cache_window:
                k_BLGK = k_BLGK[:, : self.cache_window]
                v_BLGK = v_BLGK[:, : self.cache_window]
            key_pos = jnp.arange(k_BLGK.shape[1])
            mask = key_pos[None, None, None, :] <= positions_BL[:, None, :, None]
        out_BLHK = attention(q_BLHK, k_BLGK, v_BLGK, mask)
        out_BLD = Dense(
            (self.embed_dim,), ("heads", "kv"), ("embed",), self.dtype, name="attn_out"
        )(out_BLHK)
        x_BLD = x_BLD + _gated(gate1, drop(out_BLD))

        h = _norm(self.norm, self.norm_eps, self.dtype, "mlp_norm")(x_BLD)
        h = _modulate(h, shift2, scale2)
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
        return x_BLD + _gated(gate2, drop(out_BLD)), cache


def block_stack(
    x_BLD,
    cache,
    positions_BL,
    freqs_K,
    mask,
    cond_BD=None,
    *,
    num_layers: int,
    scan_layers: bool,
    remat: bool,
    remat_policy: str,
    **fields,
):
    """`num_layers` Blocks of `fields` applied in turn, unrolled (block_0 ...)
    or `nn.scan`ned (one "blocks" entry stacked on a "layers" axis; the cache
    then {k, v} [B, layers, T, G, K]): (x, the updated cache). Called from a
    parent's compact method (the Transformer's, the DiT's), so the blocks are
    its submodules."""
    # A scanned block saves only its matmul outputs for the backward pass
    # even without remat: stacking every intermediate in the loop was
    # slower on XLA:CPU (12 layers, fwd+bwd: 1122 ms; with "dots" 911 ms;
    # unrolled 972 ms).
    policy = remat_policy if remat else ("dots" if scan_layers else "")
    block_cls = Block
    if policy:
        if policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown model.remat_policy {policy!r}; valid: "
                f"{', '.join(REMAT_POLICIES)}"
            )
        block_cls = nn.remat(Block, policy=REMAT_POLICIES[policy])
    if scan_layers:
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            out_axes=1,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        return scanned(**fields, name="blocks")(
            x_BLD, cache, positions_BL, freqs_K, mask, cond_BD
        )
    new_cache = []
    for i in range(num_layers):
        x_BLD, layer_cache = block_cls(**fields, name=f"block_{i}")(
            x_BLD,
            None if cache is None else cache[i],
            positions_BL,
            freqs_K,
            mask,
            cond_BD,
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
        segment) and per-segment `positions_BL`; `cache_window` is Block's."""
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} is not a multiple of "
                f"model.num_kv_heads={self.kv_heads}"
            )
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
        freqs_K = rope_frequencies(self.head_size, self.rope_theta, self.rope_llama3)
        mask = attention_mask(positions_BL, segment_ids_BL)
        x_BLD, new_cache = block_stack(
            x_BLD,
            cache,
            positions_BL,
            freqs_K,
            mask,
            num_layers=self.num_layers,
            scan_layers=self.scan_layers,
            remat=self.remat,
            remat_policy=self.remat_policy,
            num_heads=self.num_heads,
            num_kv_heads=self.kv_heads,
            head_dim=self.head_size,
            embed_dim=self.embed_dim,
            mlp_dim=self.mlp_dim,
            dropout=self.dropout,
            norm=self.norm,
            norm_eps=self.norm_eps,
            mlp=self.mlp,
            qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm,
            dtype=dtype,
            cache_window=cache_window,
            train=train,
        )
        x_BLD = _norm(self.norm, self.norm_eps, dtype, "final_norm")(x_BLD)
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
