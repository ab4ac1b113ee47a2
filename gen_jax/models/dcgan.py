"""DCGAN generator and discriminator (Radford et al., 2016), without BatchNorm.

The generator uses GroupNorm (or no norm); the discriminator can be spectrally
normalised, and takes labels through a projection head when `num_classes > 0`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import layers, precision

GEN_NORMS = ("group", "none")  # the generator's `norm`


class DCGenerator(nn.Module):
    """z -> a `start` x `start` grid -> one stride-2 transposed conv per entry of
    `channel_mults` (the last one to the image) -> tanh."""

    channels: int
    channel_mults: Sequence[int]  # widest first, e.g. (4, 2, 1) for 32 px
    image_size: int
    out_channels: int
    num_classes: int
    norm: str
    dtype: str

    @nn.compact
    def __call__(self, z_BZ: jax.Array, labels_B: jax.Array) -> jax.Array:
        dtype = precision.compute_dtype(self.dtype)
        start = self.image_size // 2 ** len(self.channel_mults)
        width = self.channels * self.channel_mults[0]
        h = layers.with_label(z_BZ, labels_B, self.num_classes).astype(dtype)
        h = nn.Dense(start * start * width, dtype=dtype)(h)
        h = self._act(h.reshape(-1, start, start, width), dtype)
        for m in self.channel_mults[1:]:
            h = layers.ConvTranspose2x(self.channels * m, 4, dtype)(h)
            h = self._act(h, dtype)
        h = layers.ConvTranspose2x(self.out_channels, 4, dtype)(h)
        return jnp.tanh(h.astype(jnp.float32))

    def _act(self, h, dtype):
        if self.norm == "group":
            h = layers.group_norm(h.shape[-1], 32, dtype)(h)
        elif self.norm != "none":
            raise ValueError(
                f"unknown model.gen_norm {self.norm!r}; valid: {', '.join(GEN_NORMS)}"
            )
        return nn.relu(h)


class DCDiscriminator(nn.Module):
    """One stride-2 4x4 conv per entry of `channel_mults` (narrowest first),
    LeakyReLU(0.2), then the (projection) head on the flattened features."""

    channels: int
    channel_mults: Sequence[int]
    num_classes: int
    spectral_norm: bool
    dtype: str

    @nn.compact
    def __call__(self, x_BHWC, labels_B, *, update: bool) -> jax.Array:
        dtype = precision.compute_dtype(self.dtype)
        h = x_BHWC.astype(dtype)
        for m in reversed(self.channel_mults):
            conv = nn.Conv(self.channels * m, (4, 4), (2, 2), dtype=dtype)
            h = nn.leaky_relu(layers.spectral(conv, self.spectral_norm)(h, update), 0.2)
        h_BD = h.reshape(h.shape[0], -1)
        return layers.ProjectionHead(self.num_classes, self.spectral_norm)(
            h_BD, labels_B, update
        )


def make_pair(
    *,
    gen_channels: int,
    disc_channels: int,
    channel_mults: Sequence[int],
    image_size: int,
    out_channels: int,
    num_classes: int = 0,
    spectral_norm: bool = False,
    gen_norm: str = "group",  # group | none
    dtype: str = "float32",
) -> layers.GANPair:
    """The DCGAN pair; the generator takes a latent of any width (config.model.z_dim,
    which the GAN family draws)."""
    if gen_norm not in GEN_NORMS:  # at build time, not when first traced
        raise ValueError(
            f"unknown config.model.gen_norm {gen_norm!r}; "
            f"valid: {', '.join(sorted(GEN_NORMS))}"
        )
    if image_size % 2 ** len(channel_mults):
        raise ValueError(
            f"image_size {image_size} is not divisible by 2**{len(channel_mults)} "
            "(one stride-2 layer per entry of "
            f"model.channel_mults={tuple(channel_mults)})"
        )
    return layers.GANPair(
        DCGenerator(
            gen_channels,
            channel_mults,
            image_size,
            out_channels,
            num_classes,
            gen_norm,
            dtype,
        ),
        DCDiscriminator(
            disc_channels, channel_mults, num_classes, spectral_norm, dtype
        ),
    )
