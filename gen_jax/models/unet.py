"""UNet denoiser (Ho et al., 2020, "Denoising Diffusion Probabilistic Models", App. B).

Residual blocks with GroupNorm, self-attention at chosen resolutions, a
sinusoidal time embedding through an MLP, dropout, channel multipliers per
level; optionally class-conditional with a learned null label (index
`num_classes`) for classifier-free guidance.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import attention, layers


class UNet(nn.Module):
    out_channels: int
    channels: int = 128
    channel_mults: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    num_classes: int = 0  # 0: unconditional
    norm_groups: int = 32
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BHWC, t_B, label_B=None, *, train: bool = False):
        dtype = layers.compute_dtype(self.dtype)
        block = functools.partial(
            layers.ResBlock,
            dropout=self.dropout,
            norm_groups=self.norm_groups,
            dtype=dtype,
        )

        def res(channels, h):
            h = block(channels)(h, emb_BD, train=train)
            if h.shape[1] in self.attention_resolutions:
                h = attention.AttentionBlock(self.norm_groups, dtype)(h)
            return h

        emb_BD = layers.timestep_embedding(t_B, self.channels)
        emb_BD = nn.Dense(4 * self.channels, dtype=dtype)(emb_BD)
        emb_BD = nn.Dense(4 * self.channels, dtype=dtype)(nn.swish(emb_BD))
        if self.num_classes:
            # Row `num_classes` is the null label used for unconditional passes.
            emb_BD = emb_BD + nn.Embed(self.num_classes + 1, 4 * self.channels)(label_B)

        h = nn.Conv(self.channels, (3, 3), dtype=dtype)(x_BHWC.astype(dtype))
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = res(self.channels * mult, h)
                skips.append(h)
            if level < len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=2, dtype=dtype)(h)
                skips.append(h)

        h = block(h.shape[-1])(h, emb_BD, train=train)
        h = attention.AttentionBlock(self.norm_groups, dtype)(h)
        h = block(h.shape[-1])(h, emb_BD, train=train)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(self.channels * mult, h)
            if level > 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
                h = nn.Conv(c, (3, 3), dtype=dtype)(h)

        h = nn.swish(layers.group_norm(h.shape[-1], self.norm_groups, dtype)(h))
        out = nn.Conv(
            self.out_channels, (3, 3), dtype=dtype, kernel_init=nn.initializers.zeros
        )(h)
        return out.astype(jnp.float32)  # losses run in float32
