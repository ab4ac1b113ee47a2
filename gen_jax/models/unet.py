"""UNet denoiser (Ho et al., 2020, "Denoising Diffusion Probabilistic Models", App. B).

Residual blocks with GroupNorm, self-attention at chosen resolutions, a
sinusoidal time embedding through an MLP, dropout, channel multipliers per
level; optionally class-conditional with a learned null label (index
`num_classes`) for classifier-free guidance, and text-conditional
(`text_conditioning="cross"`): Stable Diffusion's layout (Rombach et al. 2022),
a cross-attention on the text tokens after each self-attention, its keys and
values read from the (normalised) encoder features at their own width.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import attention, block, layers, precision


class TextAttention(nn.Module):
    """Multi-head cross-attention of the pixels on the text tokens, residual;
    it starts as the identity (`block.cross_attention`'s zero output)."""

    num_heads: int
    norm_groups: int
    dtype: Any

    @nn.compact
    def __call__(self, x_BHWC, context_BSD, context_mask_BS):
        b, h, w, c = x_BHWC.shape
        if c % self.num_heads:
            raise ValueError(
                f"model.text_heads={self.num_heads} does not divide the "
                f"{c} channels of an attention level"
            )
        config = block.BlockConfig(
            num_heads=self.num_heads,
            num_kv_heads=self.num_heads,
            head_dim=c // self.num_heads,
            embed_dim=c,
            mlp_dim=0,  # no MLP here
            dtype=self.dtype,
        )
        y_BHWC = layers.group_norm(c, self.norm_groups, self.dtype)(x_BHWC)
        out_BLD = block.cross_attention(
            config, y_BHWC.reshape(b, h * w, c), context_BSD, context_mask_BS
        )
        return x_BHWC + out_BLD.reshape(b, h, w, c)


def _normalised(text, dtype) -> tuple[jax.Array, jax.Array] | None:
    """The text features layer-normalised once (an LM's hidden states run
    large), with their mask; None without text."""
    if text is None:
        return None
    norm = nn.LayerNorm(1e-6, dtype=dtype, name="text_norm")
    return norm(text[0].astype(dtype)), text[1]


class UNet(nn.Module):
    out_channels: int
    channels: int = 128
    channel_mults: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    num_classes: int = 0  # 0: unconditional
    text_conditioning: str = "none"  # block.TEXT_CONDITIONINGS
    text_dim: int = 0  # the width of the text encoder's features
    text_heads: int = 8  # heads of each cross-attention (Stable Diffusion 1's)
    norm_groups: int = 32
    dtype: str = "float32"

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
        """The prediction (float32); text arguments as `dit.DiT`'s."""
        dtype = precision.compute_dtype(self.dtype)
        kind, width = self.text_conditioning, self.text_dim
        text = _normalised(
            block.text_inputs(kind, width, text_BSD, text_mask_BS), dtype
        )
        res_block = functools.partial(
            layers.ResBlock,
            dropout=self.dropout,
            norm_groups=self.norm_groups,
            dtype=dtype,
        )

        def attend(h):
            h = attention.AttentionBlock(self.norm_groups, dtype)(h)
            if text is not None:
                h = TextAttention(self.text_heads, self.norm_groups, dtype)(h, *text)
            return h

        def res(channels, h):
            h = res_block(channels)(h, emb_BD, train=train)
            if h.shape[1] in self.attention_resolutions:
                h = attend(h)
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

        h = res_block(h.shape[-1])(h, emb_BD, train=train)
        h = attend(h)
        h = res_block(h.shape[-1])(h, emb_BD, train=train)

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
