"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers") built from the LM's block parts.

Patchify (a p x p stride-p conv) -> fixed 2D sin-cos positions -> `DiTBlock`s
-> an adaLN-modulated final norm and a zero-initialised projection ->
unpatchify. Every block and the output start as the identity / zero
(adaLN-Zero), so at init the DiT predicts 0.

adaLN belongs here, not to the LM's block: `DiTBlock` takes the same
`block.BlockConfig` and calls the same sub-layers as the LM's `Block`
(`norm_layer`, `self_attention`, `feed_forward`, whose params land in the
block's own scope), and wraps them in its modulation; its attention is
non-causal and has no RoPE (the patches carry their positions).

Text conditioning (`text_conditioning="cross"`, PixArt-alpha, Chen et al. 2023):
the encoder's token features are normalised and projected to the block width
once (`_text`); every `DiTBlock` cross-attends to them after self-attention
(the tokens and their mask ride through `block_stack` as shared arguments),
and their masked mean, projected, joins the adaLN conditioning (the pooled
prompt embedding). The cross-attention's output projection and the pooled
one start at zero, so at init the text changes nothing.

It takes the UNet's call signature, (x_BHWC, t_B, label_B=None, text_BSD=None,
text_mask_BS=None, train=...), so the diffusion family trains either under any
objective. Its params carry the transformer's logical axis names (sharding.py),
and `scan_layers` stacks the blocks as the LM's do.

Sizes (DiT Table 1; patch size is separate, DiT-S/2 has patch 2):

| size | layers | width | heads | params, patch 2 on 32x32x4 latents, 1000 classes |
|------|--------|-------|-------|--------------------------------------------------|
| S    | 12     | 384   | 6     | 32.9 M (DiT: 33 M)                               |
| B    | 12     | 768   | 12    | 130.3 M (130 M)                                  |
| L    | 24     | 1024  | 16    | 457.8 M (458 M)                                  |
| XL   | 28     | 1152  | 16    | 674.8 M (675 M)                                  |

(ours counted with `jax.eval_shape` on `DiT(out_channels=8, **SIZES[s])`.)

Differences from the paper's network: the blocks' norms keep a learned scale
and bias (DiT's are affine-free; at init they are the identity, so adaLN-Zero
starts the same); the MLP and the attention's output projection have no bias
(the LM's; q, k and v have one); the label embedding's null row is index
`num_classes`, as the UNet's. With text, a norm precedes each cross-attention
(Stable Diffusion's; PixArt has none) and one the caption projection (Sana's).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import attention, block, layers, precision

SIZES = {
    "S": {"num_layers": 12, "embed_dim": 384, "num_heads": 6},
    "B": {"num_layers": 12, "embed_dim": 768, "num_heads": 12},
    "L": {"num_layers": 24, "embed_dim": 1024, "num_heads": 16},
    "XL": {"num_layers": 28, "embed_dim": 1152, "num_heads": 16},
}


def sincos_2d(grid: int, dim: int) -> np.ndarray:
    """[grid * grid, dim] fixed 2D sin-cos positions (half the channels for
    rows, half for columns), as DiT and MAE use."""
    if dim % 4:
        raise ValueError(f"DiT model.embed_dim must be a multiple of 4, got {dim}")
    omega = 1.0 / 10_000 ** (np.arange(dim // 4) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def embed(pos):
        angles = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed(rows), embed(cols)], axis=1).astype(np.float32)


def modulate(h_BLD: jax.Array, shift_B1D: jax.Array, scale_B1D: jax.Array):
    """adaLN: h (1 + scale) + shift."""
    return h_BLD * (1 + scale_B1D) + shift_B1D


def unpatchify(out_BLF: jax.Array, grid: int, p: int, channels: int):
    """[B, grid * grid, p * p * C] patches -> [B, grid * p, grid * p, C]."""
    b = out_BLF.shape[0]
    out = out_BLF.reshape(b, grid, grid, p, p, channels)
    return out.transpose(0, 1, 3, 2, 4, 5).reshape(b, grid * p, grid * p, channels)


def _adaln(cond_BD: jax.Array, num: int, dtype, name: str, **kw) -> list[jax.Array]:
    """`num` [B, 1, D] modulations from a zero-initialised projection of the
    conditioning (adaLN-Zero)."""
    dense = nn.Dense(
        num * cond_BD.shape[-1],
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed", "mlp")
        ),
        name=name,
        **kw,
    )
    return jnp.split(dense(nn.silu(cond_BD))[:, None], num, -1)


class DiTBlock(nn.Module):
    """A pre-norm block with adaLN-Zero (DiT Sec. 3.2): the conditioning vector
    sets a shift and scale after each norm and a gate on each branch, from a
    zero-initialised projection, so the block starts as the identity."""

    config: block.BlockConfig

    @nn.compact
    def __call__(
        self, x_BLD, cache, mask, cond_BD, context_BSD=None, context_mask_BS=None
    ):
        """(x, `cache`): a DiT keeps no cache (None); the slot is `block_stack`'s.
        Given text tokens, it cross-attends to them after self-attention
        (unmodulated and ungated, as PixArt-alpha)."""
        cfg = self.config
        drop = nn.Dropout(cfg.dropout, deterministic=not cfg.train)
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",))
        mods = _adaln(cond_BD, 6, cfg.dtype, "adaln", bias_init=bias_init)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        h_BLD = block.norm_layer(cfg, "attn_norm")(x_BLD)
        out_BLD, _ = block.self_attention(cfg, modulate(h_BLD, shift1, scale1), mask)
        x_BLD = x_BLD + gate1 * drop(out_BLD)
        if context_BSD is not None:
            h_BLD = block.norm_layer(cfg, "cross_norm")(x_BLD)
            out_BLD = block.cross_attention(cfg, h_BLD, context_BSD, context_mask_BS)
            x_BLD = x_BLD + drop(out_BLD)
        h_BLD = block.norm_layer(cfg, "mlp_norm")(x_BLD)
        out_BLD = block.feed_forward(cfg, modulate(h_BLD, shift2, scale2))
        return x_BLD + gate2 * drop(out_BLD), cache


def _conditioning(t_B, label_B, num_classes: int, width: int, dtype) -> jax.Array:
    """[B, D]: the time embedding through an MLP, plus the label's embedding."""
    init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
    dense = lambda name: nn.Dense(width, dtype=dtype, kernel_init=init, name=name)
    cond_BD = dense("time_out")(
        nn.silu(dense("time_in")(layers.timestep_embedding(t_B, 256)))
    )
    if not num_classes:
        return cond_BD
    # Row `num_classes` is the null label used for unconditional passes.
    embed = nn.Embed(num_classes + 1, width, embedding_init=init, name="label_embed")
    return cond_BD + embed(label_B)


def _text(config: block.BlockConfig, text, cond_BD) -> tuple[jax.Array, tuple]:
    """(cond_BD, the blocks' text arguments). PixArt-alpha's caption projection,
    once for every block: the encoder's features normalised (Sana: an LM's
    hidden states run large), then a GELU MLP to the block width. Their masked
    mean through a zero-initialised projection joins the conditioning, so the
    null caption (no tokens) adds nothing to it."""
    if text is None:
        return cond_BD, ()
    text_BSD, mask_BS = text
    d, dtype = config.embed_dim, config.dtype
    dense = lambda name, **kw: layers.Dense(
        (d,), (None,), ("embed",), dtype, name=name, **kw
    )
    h_BSD = block.norm_layer(config, "text_norm")(text_BSD.astype(dtype))
    h_BSD = dense("text_in", use_bias=True)(h_BSD)
    context_BSD = dense("text_out", use_bias=True)(nn.gelu(h_BSD))
    weight_BS1 = mask_BS[:, :, None].astype(jnp.float32)
    count_B1 = jnp.maximum(jnp.sum(weight_BS1, axis=1), 1.0)
    pooled_BD = jnp.sum(context_BSD * weight_BS1, axis=1) / count_B1
    pooled_BD = dense("text_pool", kernel_init=nn.initializers.zeros)(pooled_BD)
    return cond_BD + pooled_BD, (context_BSD, mask_BS)


class DiT(nn.Module):
    out_channels: int
    patch_size: int = 2
    num_layers: int = 12
    num_heads: int = 6
    embed_dim: int = 384
    mlp_ratio: int = 4
    num_classes: int = 0  # 0: unconditional
    text_conditioning: str = "none"  # block.TEXT_CONDITIONINGS
    text_dim: int = 0  # the width of the text encoder's features
    dropout: float = 0.0
    scan_layers: bool = False
    remat: bool = False
    remat_policy: str = "nothing"
    dtype: str = "float32"

    def block_config(self, *, train: bool = False) -> block.BlockConfig:
        """The BlockConfig of this model's blocks (DiT's: LayerNorm, GELU MLP,
        biased q/k/v)."""
        return block.BlockConfig(
            num_heads=self.num_heads,
            num_kv_heads=self.num_heads,
            head_dim=self.embed_dim // self.num_heads,
            embed_dim=self.embed_dim,
            mlp_dim=self.mlp_ratio * self.embed_dim,
            norm="layer",
            norm_eps=1e-6,
            mlp="gelu",
            qkv_bias=True,
            dropout=self.dropout,
            dtype=precision.compute_dtype(self.dtype),
            train=train,
        )

    @nn.compact
    def __call__(
        self,
        x_BHWC,
        t_B,
        label_B=None,
        text_BSD=None,
        text_mask_BS=None,
        *,
        train: bool = False,
    ):
        """The prediction (float32) for noisy images at times `t_B`, given
        labels and, with text conditioning, the text encoder's features and
        their mask (true for real tokens; all false is the null caption)."""
        text = block.text_inputs(
            self.text_conditioning, self.text_dim, text_BSD, text_mask_BS
        )
        config = self.block_config(train=train)
        dtype, d, p = config.dtype, self.embed_dim, self.patch_size
        b, height, width, _ = x_BHWC.shape
        if height != width or height % p:
            raise ValueError(
                f"DiT needs square images whose side divides by model.patch_size="
                f"{p}; got {height}x{width}"
            )
        grid = height // p
        h = nn.Conv(
            d, (p, p), strides=p, padding="VALID", dtype=dtype, name="patchify"
        )(x_BHWC.astype(dtype))
        x_BLD = (
            h.reshape(b, grid * grid, d) + jnp.asarray(sincos_2d(grid, d), dtype)[None]
        )
        cond_BD = _conditioning(t_B, label_B, self.num_classes, d, dtype)
        cond_BD, text_args = _text(config, text, cond_BD)
        x_BLD, _ = block.block_stack(
            DiTBlock,
            config,
            x_BLD,
            None,
            attention.full_mask(grid * grid),  # non-causal
            cond_BD,
            *text_args,
            num_layers=self.num_layers,
            scan_layers=self.scan_layers,
            remat=self.remat,
            remat_policy=self.remat_policy,
        )
        shift_B1D, scale_B1D = _adaln(cond_BD, 2, dtype, "final_adaln")
        h = nn.LayerNorm(1e-6, dtype=dtype, use_scale=False, use_bias=False)(x_BLD)
        out = nn.Dense(
            p * p * self.out_channels,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.zeros, ("embed", None)
            ),
            name="final",
        )(modulate(h, shift_B1D, scale_B1D))
        out_BHWC = unpatchify(out, grid, p, self.out_channels)
        return out_BHWC.astype(jnp.float32)  # losses run in float32
