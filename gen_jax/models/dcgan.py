"""DCGAN generator and discriminator (Radford et al., 2016), without BatchNorm.

The generator uses GroupNorm (or no norm); the discriminator can be spectrally
normalised, and takes labels through a projection head when `num_classes > 0`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import layers


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
        dtype = layers.compute_dtype(self.dtype)
        start = self.image_size // 2 ** len(self.channel_mults)
        width = self.channels * self.channel_mults[0]
        h = layers.with_label(z_BZ, labels_B, self.num_classes).astype(dtype)
        h = nn.Dense(start * start * width, dtype=dtype)(h)
        h = self._act(h.reshape(-1, start, start, width), dtype)
        for m in self.channel_mults[1:]:
            h = nn.ConvTranspose(self.channels * m, (4, 4), (2, 2), dtype=dtype)(h)
            h = self._act(h, dtype)
        h = nn.ConvTranspose(self.out_channels, (4, 4), (2, 2), dtype=dtype)(h)
        return jnp.tanh(h.astype(jnp.float32))

    def _act(self, h, dtype):
        if self.norm == "group":
            h = layers.group_norm(h.shape[-1], 32, dtype)(h)
        elif self.norm != "none":
            raise ValueError(f"unknown model.gen_norm {self.norm!r}; use group|none")
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
        dtype = layers.compute_dtype(self.dtype)
        h = x_BHWC.astype(dtype)
        for m in reversed(self.channel_mults):
            conv = nn.Conv(self.channels * m, (4, 4), (2, 2), dtype=dtype)
            h = nn.leaky_relu(layers.spectral(conv, self.spectral_norm)(h, update), 0.2)
        h_BD = h.reshape(h.shape[0], -1)
        return layers.ProjectionHead(self.num_classes, self.spectral_norm)(
            h_BD, labels_B, update
        )


class DCGAN(nn.Module):
    """The pair; families call `generate` and `discriminate`, and keep the two
    param subtrees ("generator", "discriminator") as separate roles."""

    z_dim: int
    gen_channels: int
    disc_channels: int
    channel_mults: Sequence[int]
    image_size: int
    out_channels: int
    num_classes: int = 0
    spectral_norm: bool = False
    gen_norm: str = "group"  # group | none
    dtype: str = "float32"

    def setup(self):
        if self.image_size % 2 ** len(self.channel_mults):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by "
                f"2**{len(self.channel_mults)} (one stride-2 layer per entry of "
                f"model.channel_mults={tuple(self.channel_mults)})"
            )
        self.generator = DCGenerator(
            self.gen_channels,
            self.channel_mults,
            self.image_size,
            self.out_channels,
            self.num_classes,
            self.gen_norm,
            self.dtype,
        )
        self.discriminator = DCDiscriminator(
            self.disc_channels,
            self.channel_mults,
            self.num_classes,
            self.spectral_norm,
            self.dtype,
        )

    def generate(self, z_BZ: jax.Array, labels_B: jax.Array) -> jax.Array:
        return self.generator(z_BZ, labels_B)

    def discriminate(self, x_BHWC, labels_B, update: bool = False) -> jax.Array:
        return self.discriminator(x_BHWC, labels_B, update=update)

    def __call__(self, z_BZ, x_BHWC, labels_B):
        """Runs both networks (used by init, so every variable is created)."""
        return self.generate(z_BZ, labels_B), self.discriminate(x_BHWC, labels_B)
