"""ResNet generator and discriminator of SNGAN (Miyato et al., 2018), without BatchNorm.

Generator blocks upsample (nearest) with GroupNorm; discriminator blocks are
spectrally normalised, average-pool to downsample, sum-pool at the end, and take
labels through a projection head when `num_classes > 0`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import layers, precision


def _upsample(x_BHWC):
    return jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)


def _downsample(x_BHWC):
    return nn.avg_pool(x_BHWC, (2, 2), (2, 2))


class GenBlock(nn.Module):
    """norm-relu-up-conv3-norm-relu-conv3, plus an upsampled 1x1 shortcut."""

    channels: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC):
        norm = layers.group_norm
        h = nn.relu(norm(x_BHWC.shape[-1], 32, self.dtype)(x_BHWC))
        h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(_upsample(h))
        h = nn.relu(norm(self.channels, 32, self.dtype)(h))
        h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(h)
        skip = nn.Conv(self.channels, (1, 1), dtype=self.dtype)(_upsample(x_BHWC))
        return skip + h


class DiscBlock(nn.Module):
    """(relu)-conv3-relu-conv3-(pool), plus a 1x1 shortcut; the first block skips
    the leading relu and pools before its shortcut conv (SNGAN's "optimized" block)."""

    channels: int
    down: bool
    first: bool
    spectral_norm: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC, update: bool):
        def conv(size):
            layer = nn.Conv(self.channels, (size, size), dtype=self.dtype)
            return layers.spectral(layer, self.spectral_norm)

        h = x_BHWC if self.first else nn.relu(x_BHWC)
        h = conv(3)(nn.relu(conv(3)(h, update)), update)
        if self.down:
            h = _downsample(h)
        skip = x_BHWC
        if self.first:
            skip = conv(1)(_downsample(skip) if self.down else skip, update)
        elif self.down or skip.shape[-1] != self.channels:
            skip = conv(1)(skip, update)
            skip = _downsample(skip) if self.down else skip
        return skip + h


class ResGenerator(nn.Module):
    """z -> a small grid -> `num_blocks` upsampling blocks -> norm-relu-conv3 -> tanh."""

    channels: int
    num_blocks: int
    image_size: int
    out_channels: int
    num_classes: int
    dtype: str

    @nn.compact
    def __call__(self, z_BZ: jax.Array, labels_B: jax.Array) -> jax.Array:
        dtype = precision.compute_dtype(self.dtype)
        start, c = self.image_size // 2**self.num_blocks, self.channels
        h = layers.with_label(z_BZ, labels_B, self.num_classes).astype(dtype)
        h = nn.Dense(start * start * c, dtype=dtype)(h).reshape(-1, start, start, c)
        for _ in range(self.num_blocks):
            h = GenBlock(c, dtype)(h)
        h = nn.relu(layers.group_norm(c, 32, dtype)(h))
        h = nn.Conv(self.out_channels, (3, 3), dtype=dtype)(h)
        return jnp.tanh(h.astype(jnp.float32))


class ResDiscriminator(nn.Module):
    """`num_blocks` residual blocks (the first `num_down` halve the size), relu,
    global sum pooling, then the (projection) head."""

    channels: int
    num_blocks: int
    num_down: int
    num_classes: int
    spectral_norm: bool
    dtype: str

    @nn.compact
    def __call__(self, x_BHWC, labels_B, *, update: bool) -> jax.Array:
        dtype = precision.compute_dtype(self.dtype)
        h = x_BHWC.astype(dtype)
        for i in range(self.num_blocks):
            down = i < self.num_down
            h = DiscBlock(self.channels, down, i == 0, self.spectral_norm, dtype)(
                h, update
            )
        h_BD = jnp.sum(nn.relu(h), axis=(1, 2))  # global sum pooling, as in SNGAN
        return layers.ProjectionHead(self.num_classes, self.spectral_norm)(
            h_BD, labels_B, update
        )


def make_pair(
    *,
    gen_channels: int,
    disc_channels: int,
    gen_blocks: int,  # 2x upsampling blocks from a (image_size / 2**n)^2 grid
    disc_blocks: int,  # residual blocks in the discriminator ...
    disc_down_blocks: int,  # ... of which the first this many halve the size
    image_size: int,
    out_channels: int,
    num_classes: int = 0,
    spectral_norm: bool = True,
    dtype: str = "float32",
) -> layers.GANPair:
    """The SNGAN pair; the generator takes a latent of any width (config.model.z_dim,
    which the GAN family draws)."""
    if image_size % 2**gen_blocks:
        raise ValueError(
            f"image_size {image_size} is not divisible by "
            f"2**model.gen_blocks = {2**gen_blocks}"
        )
    return layers.GANPair(
        ResGenerator(
            gen_channels, gen_blocks, image_size, out_channels, num_classes, dtype
        ),
        ResDiscriminator(
            disc_channels,
            disc_blocks,
            disc_down_blocks,
            num_classes,
            spectral_norm,
            dtype,
        ),
    )
