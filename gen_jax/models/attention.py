"""Attention primitives: rotary positions (Su et al. 2021), masks, grouped-query
dot-product attention (Ainslie et al. 2023) with its XLA:CPU path, the KV-cache
write, and the UNet's single-head attention block (Ho et al. 2020)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import layers, precision


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


def full_mask(length: int) -> jax.Array:
    """[1, 1, L, L]: every position sees every other (non-causal attention)."""
    return jnp.ones((1, 1, length, length), bool)


def write_cache(cache: dict, k_BLGK, v_BLGK, positions_BL, window: int = 0):
    """Writes each row's new keys and values at its start position (rows may sit
    at different positions: a server's decode slots): (keys, values and the
    [B, 1, L, T] causal mask to attend over, the updated cache). `window` > 0
    attends over the cache's first `window` positions only."""
    write = jax.vmap(
        lambda c, x, start: jax.lax.dynamic_update_slice_in_dim(c, x, start, 0)
    )
    k_BTGK = write(cache["k"], k_BLGK, positions_BL[:, 0])
    v_BTGK = write(cache["v"], v_BLGK, positions_BL[:, 0])
    cache = {"k": k_BTGK, "v": v_BTGK}
    if window:
        k_BTGK, v_BTGK = k_BTGK[:, :window], v_BTGK[:, :window]
    key_pos = jnp.arange(k_BTGK.shape[1])
    mask_B1LT = key_pos[None, None, None, :] <= positions_BL[:, None, :, None]
    return k_BTGK, v_BTGK, mask_B1LT, cache


IMPLEMENTATIONS = ("batched", "xla", "cudnn")


def implementation(q_BLHK, k_BTGK, mask_B1LT=None, backend: str = "") -> str:
    """Which attention runs (explicitly: `jax.nn.dot_product_attention` picks
    its XLA path unless told, on GPU too). "cudnn": cuDNN's fused flash
    attention, on an NVIDIA GPU for bf16/fp16 with a head dim of at most 128
    and a multiple of 8 (cuDNN's limit before Hopper) and, with a mask (taken
    as a bias), even query and key lengths. "batched": heads moved in front of
    the sequence, then batched matmuls, which XLA:CPU runs faster forward and
    backward. "xla": jax's own XLA path, elsewhere (TPU; GPU cases cuDNN
    refuses)."""
    backend = backend or _backend()
    if backend == "cpu":
        return "batched"
    (_, length, _, dim), keys = q_BLHK.shape, k_BTGK.shape[1]
    narrow = jnp.dtype(q_BLHK.dtype) in (jnp.bfloat16, jnp.float16)
    fits = dim <= 128 and dim % 8 == 0
    even = mask_B1LT is None or (length % 2 == 0 and keys % 2 == 0)
    return "cudnn" if backend in ("gpu", "cuda") and narrow and fits and even else "xla"


def _backend() -> str:
    """jax's default backend, "rocm" for a GPU that is not NVIDIA's (jax
    calls both "gpu"; cuDNN is NVIDIA's)."""
    backend = jax.default_backend()
    if backend == "gpu" and "nvidia" not in jax.devices()[0].device_kind.lower():
        return "rocm"
    return backend


def attention(q_BLHK, k_BTGK, v_BTGK, mask_B1LT=None, *, impl: str = "") -> jax.Array:
    """Grouped-query attention (H query heads share G kv heads), causal when
    `mask_B1LT` is None; `impl` one of IMPLEMENTATIONS, default
    `implementation(...)`'s choice for this backend and these inputs."""
    impl = impl or implementation(q_BLHK, k_BTGK, mask_B1LT)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention impl {impl!r}; valid: {IMPLEMENTATIONS}")
    if impl != "batched":
        return jax.nn.dot_product_attention(
            q_BLHK,
            k_BTGK,
            v_BTGK,
            mask=mask_B1LT,
            is_causal=mask_B1LT is None,
            implementation=impl,
        )
    b, length, heads, dim = q_BLHK.shape
    groups = k_BTGK.shape[2]
    # [B, G, R, L, K]: the R query heads of a group share its keys.
    q_BGRLK = q_BLHK.reshape(b, length, groups, heads // groups, dim).transpose(
        0, 2, 3, 1, 4
    )
    k_BGTK, v_BGTK = (x.transpose(0, 2, 1, 3) for x in (k_BTGK, v_BTGK))
    if mask_B1LT is not None:
        out_BGRLK = _attend(q_BGRLK, k_BGTK, v_BGTK, mask_B1LT[:, :, None])
    else:
        out_BGRLK = _causal_blocks(q_BGRLK, k_BGTK, v_BGTK)
    return out_BGRLK.transpose(0, 3, 1, 2, 4).reshape(b, length, heads, dim)


def _causal_blocks(q_BGRLK, k_BGTK, v_BGTK) -> jax.Array:
    """Causal attention with the queries in two blocks, each over its key
    prefix: the masked upper-right quarter of the scores is skipped, not
    computed. More blocks cost more on XLA:CPU than they skip."""
    length, keys = q_BGRLK.shape[3], k_BGTK.shape[2]
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
    return outs[0] if blocks == 1 else jnp.concatenate(outs, axis=3)


def _attend(q_BGRLK, k_BGTK, v_BGTK, mask) -> jax.Array:
    """Softmax attention of [B, G, R, L, K] queries over [B, G, T, K] keys;
    `mask` broadcasts against the [B, G, R, L, T] scores."""
    b, groups, r, length, dim = q_BGRLK.shape
    keys = k_BGTK.shape[2]
    # The R heads stack along the query axis: every matmul is a plain batched one.
    q_BGQK = q_BGRLK.reshape(b, groups, r * length, dim)
    dtype = v_BGTK.dtype  # the compute dtype (q may be float32 after rotary)
    logits_BGQT = precision.einsum(
        "bgqk,bgtk->bgqt", q_BGQK, k_BGTK, dtype, jnp.float32
    )
    logits_BGRLT = logits_BGQT.reshape(b, groups, r, length, keys)
    logits_BGRLT = logits_BGRLT / np.float32(np.sqrt(dim))
    # The lowest finite score, not -inf: a fully masked row (padding) averages
    # instead of giving NaN, as jax.nn.dot_product_attention does.
    logits_BGRLT = jnp.where(mask, logits_BGRLT, jnp.finfo(jnp.float32).min)
    probs_BGRLT = jax.nn.softmax(logits_BGRLT, axis=-1).astype(v_BGTK.dtype)
    probs_BGQT = probs_BGRLT.reshape(b, groups, r * length, keys)
    out_BGQK = precision.einsum("bgqt,bgtk->bgqk", probs_BGQT, v_BGTK, dtype)
    return out_BGQK.reshape(b, groups, r, length, dim)


class AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels, residual (DDPM at 16x16)."""

    norm_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC):
        b, h, w, c = x_BHWC.shape
        y = layers.group_norm(c, self.norm_groups, self.dtype)(x_BHWC)
        qkv = nn.Dense(3 * c, dtype=self.dtype)(y).reshape(b, h * w, 3, 1, c)
        q_BLHK, k_BLHK, v_BLHK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # cuDNN where `implementation` picks it (a head dim of c <= 128), else
        # jax's XLA path: no mask, so the batched path's gain is not needed.
        cudnn = implementation(q_BLHK, k_BLHK) == "cudnn"
        out = jax.nn.dot_product_attention(
            q_BLHK, k_BLHK, v_BLHK, implementation="cudnn" if cudnn else "xla"
        )
        out = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros)(
            out.reshape(b, h, w, c)
        )
        return x_BHWC + out
