"""Convolutional encoder/decoder networks for image families (VAE today)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import layers, precision


class ConvEncoder(nn.Module):
    """Stride-2 convs, then an MLP to `2 * latents` (mean and log-variance);
    `spatial`: a 3x3 conv of width `hidden` and one to `2 * latents` channels
    at the coarse grid instead (a latent image, for latent diffusion)."""

    channels: Sequence[int]
    kernel_size: int
    hidden: int
    latents: int
    dtype: str = "float32"
    spatial: bool = False

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        dtype = precision.compute_dtype(self.dtype)
        k = (self.kernel_size, self.kernel_size)
        h = x_BHWC.astype(dtype)
        for c in self.channels:
            h = nn.gelu(nn.Conv(c, k, strides=2, padding="SAME", dtype=dtype)(h))
        # float32 for the posterior parameters: the KL and sampling are sensitive.
        if self.spatial:
            h = nn.gelu(nn.Conv(self.hidden, (3, 3), dtype=dtype)(h))
            out = nn.Conv(2 * self.latents, (3, 3), dtype=jnp.float32)(h)
        else:
            h = h.reshape(h.shape[0], -1)
            h = nn.gelu(nn.Dense(self.hidden, dtype=dtype)(h))
            out = nn.Dense(2 * self.latents, dtype=jnp.float32)(h)
        mean_BZ, logvar_BZ = jnp.split(out.astype(jnp.float32), 2, axis=-1)
        return mean_BZ, logvar_BZ


class ConvDecoder(nn.Module):
    """MLP to a coarse grid, then stride-2 transposed convs up to the image."""

    channels: Sequence[int]  # encoder order; the decoder runs them reversed
    kernel_size: int
    hidden: int
    image_size: int
    out_channels: int
    dtype: str = "float32"
    spatial: bool = False  # z is a latent image (ConvEncoder's)

    @nn.compact
    def __call__(self, z_BZ: jax.Array) -> jax.Array:
        dtype = precision.compute_dtype(self.dtype)
        coarse = self.image_size // 2 ** len(self.channels)
        if self.spatial:
            h = nn.gelu(nn.Conv(self.hidden, (3, 3), dtype=dtype)(z_BZ.astype(dtype)))
            h = nn.gelu(nn.Conv(self.channels[-1], (3, 3), dtype=dtype)(h))
        else:
            h = nn.gelu(nn.Dense(self.hidden, dtype=dtype)(z_BZ.astype(dtype)))
            h = nn.gelu(nn.Dense(coarse * coarse * self.channels[-1], dtype=dtype)(h))
            h = h.reshape(h.shape[0], coarse, coarse, self.channels[-1])
        for c in reversed(self.channels[:-1]):
            h = nn.gelu(layers.ConvTranspose2x(c, self.kernel_size, dtype)(h))
        out_BHWC = layers.ConvTranspose2x(self.out_channels, self.kernel_size, dtype)(h)
        return out_BHWC.astype(jnp.float32)


class ConvVAE(nn.Module):
    """Encoder and decoder in one module; families call `encode` and `decode`."""

    channels: Sequence[int]
    kernel_size: int
    hidden: int
    latents: int
    image_size: int
    out_channels: int
    dtype: str = "float32"
    # Latents as an image, [image_size / 2^len(channels)]^2 x latents, not a
    # vector: the autoencoder of latent diffusion (config.latent).
    spatial: bool = False

    @property
    def latent_shape(self) -> tuple[int, ...]:
        if not self.spatial:
            return (self.latents,)
        coarse = self.image_size // 2 ** len(self.channels)
        return (coarse, coarse, self.latents)

    def setup(self):
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.channels)}"
                f" (one stride-2 conv per entry of model.channels={tuple(self.channels)})"
            )
        self.encoder = ConvEncoder(
            self.channels,
            self.kernel_size,
            self.hidden,
            self.latents,
            self.dtype,
            self.spatial,
        )
        self.decoder = ConvDecoder(
            self.channels,
            self.kernel_size,
            self.hidden,
            self.image_size,
            self.out_channels,
            self.dtype,
            self.spatial,
        )

    def encode(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x_BHWC)

    def decode(self, z_BZ: jax.Array) -> jax.Array:
        return self.decoder(z_BZ)

    def __call__(self, x_BHWC: jax.Array, z_BZ: jax.Array):
        """Runs both halves (used by init, so every parameter is created)."""
        return self.encode(x_BHWC), self.decode(z_BZ)
