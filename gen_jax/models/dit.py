"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers") built from the LM's own block.

Patchify (a p x p stride-p conv) -> fixed 2D sin-cos positions -> the blocks
of models/transformer.py with adaLN-Zero conditioning on the time (+ label)
embedding and non-causal attention -> an adaLN-modulated final norm and a
zero-initialised projection -> unpatchify. Every block and the output start
as the identity / zero (adaLN-Zero), so at init the DiT predicts 0.

It takes the UNet's call signature, (x_BHWC, t_B, label_B=None, train=...),
so the diffusion family trains either under any objective. Its params carry
the transformer's logical axis names (sharding.py), and `scan_layers` stacks
the blocks as the LM's do.

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
starts the same); the MLP and attention projections have no bias (the LM's);
the label embedding's null row is index `num_classes`, as the UNet's.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gen_jax.models import layers, transformer

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


class DiT(nn.Module):
    out_channels: int
    patch_size: int = 2
    num_layers: int = 12
    num_heads: int = 6
    embed_dim: int = 384
    mlp_ratio: int = 4
    num_classes: int = 0  # 0: unconditional
    dropout: float = 0.0
    scan_layers: bool = False
    remat: bool = False
    remat_policy: str = "nothing"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BHWC, t_B, label_B=None, *, train: bool = False):
        dtype = layers.compute_dtype(self.dtype)
        b, height, width, _ = x_BHWC.shape
        p = self.patch_size
        if height != width or height % p:
            raise ValueError(
                f"DiT needs square images whose side divides by model.patch_size="
                f"{p}; got {height}x{width}"
            )
        d = self.embed_dim
        grid = height // p
        h = nn.Conv(
            d, (p, p), strides=p, padding="VALID", dtype=dtype, name="patchify"
        )(x_BHWC.astype(dtype))
        x_BLD = (
            h.reshape(b, grid * grid, d) + jnp.asarray(sincos_2d(grid, d), dtype)[None]
        )

        dense = lambda name: nn.Dense(
            d,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (None, "embed")
            ),
            name=name,
        )
        cond_BD = dense("time_out")(
            nn.silu(dense("time_in")(layers.timestep_embedding(t_B, 256)))
        )
        if self.num_classes:
            # Row `num_classes` is the null label used for unconditional passes.
            cond_BD = cond_BD + nn.Embed(
                self.num_classes + 1,
                d,
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(0.02), (None, "embed")
                ),
                name="label_embed",
            )(label_B)

        length = grid * grid
        positions_BL = jnp.broadcast_to(jnp.arange(length), (b, length))
        full_mask = jnp.ones((1, 1, length, length), bool)  # non-causal
        x_BLD, _ = transformer.block_stack(
            x_BLD,
            None,
            positions_BL,
            jnp.zeros((1,), jnp.float32),  # no RoPE
            full_mask,
            cond_BD,
            num_layers=self.num_layers,
            scan_layers=self.scan_layers,
            remat=self.remat,
            remat_policy=self.remat_policy,
            num_heads=self.num_heads,
            num_kv_heads=self.num_heads,
            head_dim=d // self.num_heads,
            embed_dim=d,
            mlp_dim=self.mlp_ratio * d,
            dropout=self.dropout,
            norm="layer",
            norm_eps=1e-6,
            mlp="gelu",
            qkv_bias=True,
            qk_norm=False,
            dtype=dtype,
            train=train,
            rope=False,
            adaln=True,
        )

        zeros = nn.initializers.zeros
        shift_BD, scale_BD = jnp.split(
            nn.Dense(
                2 * d,
                dtype=dtype,
                kernel_init=nn.with_logical_partitioning(zeros, ("embed", "mlp")),
                name="final_adaln",
            )(nn.silu(cond_BD))[:, None],
            2,
            -1,
        )
        h = nn.LayerNorm(1e-6, dtype=dtype, use_scale=False, use_bias=False)(x_BLD)
        h = h * (1 + scale_BD) + shift_BD
        out = nn.Dense(
            p * p * self.out_channels,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(zeros, ("embed", None)),
            name="final",
        )(h)
        # Unpatchify: [B, grid*grid, p*p*C] -> [B, H, W, C].
        out = out.reshape(b, grid, grid, p, p, self.out_channels)
        out = out.transpose(0, 1, 3, 2, 4, 5).reshape(
            b, height, width, self.out_channels
        )
        return out.astype(jnp.float32)  # losses run in float32
