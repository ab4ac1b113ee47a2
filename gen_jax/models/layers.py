"""Layers shared by the networks, and the shape-suffix legend used in model code.

Legend: B batch, L length, D width, H heads / height, W image width, K head dim,
V vocab, F hidden, C channels, Z latent; in attention G kv heads, T key length,
S text (context) length.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import precision


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0):
    """Sinusoidal embedding of (integer or real) timesteps, as in Transformer/DDPM."""
    half = dim // 2
    freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
    args_BF = t_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
    return jnp.concatenate([jnp.sin(args_BF), jnp.cos(args_BF)], axis=-1)


class GroupNorm(nn.Module):
    """`nn.GroupNorm` over NHWC images (same params, init and math), computed
    from per-channel sums: the reductions run over contiguous (H, W) and the
    normalisation is one fused elementwise pass. XLA:CPU runs flax's version,
    which reduces over a reshaped (H, W, C/G), 4-8x slower."""

    num_groups: int
    epsilon: float = 1e-6
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        b, h, w, c = x_BHWC.shape
        scale_C = self.param("scale", nn.initializers.ones, (c,))
        bias_C = self.param("bias", nn.initializers.zeros, (c,))
        x32 = x_BHWC.astype(jnp.float32)  # statistics in float32, as flax does
        per_group = c // self.num_groups
        count = h * w * per_group
        sum_BG = jnp.sum(x32, axis=(1, 2)).reshape(b, self.num_groups, -1).sum(-1)
        sq_BG = jnp.sum(x32 * x32, axis=(1, 2)).reshape(b, self.num_groups, -1).sum(-1)
        mean_BG = sum_BG / count
        # E[x^2] - E[x]^2, clipped at 0: flax's default (use_fast_variance).
        var_BG = jnp.maximum(sq_BG / count - mean_BG**2, 0.0)
        mean_BC = jnp.repeat(mean_BG, per_group, axis=1)
        inv_BC = jnp.repeat(jax.lax.rsqrt(var_BG + self.epsilon), per_group, axis=1)
        a_BC = inv_BC * scale_C[None, :]
        dtype = self.dtype or x_BHWC.dtype
        # (x - mean) * a + bias, not x * a + shift: no cancellation in bfloat16.
        centered = x_BHWC.astype(dtype) - mean_BC[:, None, None, :].astype(dtype)
        bias_111C = bias_C[None, None, None, :].astype(dtype)
        return centered * a_BC[:, None, None, :].astype(dtype) + bias_111C


def group_norm(channels: int, groups: int, dtype) -> GroupNorm:
    """GroupNorm with the largest group count dividing `channels` (<= groups)."""
    # The largest group count dividing `channels`, so tiny test widths work.
    return GroupNorm(num_groups=math.gcd(groups, channels), dtype=dtype)


class Dense(nn.Module):
    """A bias-free projection of the trailing `len(in_axes)` axes onto
    `features`, its kernel's axes logically named `in_axes + out_axes`.

    Computed as one 2D matmul, [B*L, in] @ [in, out]: XLA:CPU runs the
    backward pass of a [B, L, D] @ [D, F] dot_general slower (its weight
    gradient contracts over two axes). Kernels keep heads outermost, so
    flattening them leaves a "heads"-sharded axis sharded in blocks."""

    features: tuple[int, ...]
    in_axes: tuple[str | None, ...]
    out_axes: tuple[str | None, ...]
    dtype: Any = jnp.float32
    use_bias: bool = False
    kernel_init: Callable = nn.initializers.normal(0.02)
    out_dtype: Any = None  # default: dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_axes)
        in_shape, lead = x.shape[-n_in:], x.shape[:-n_in]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                self.kernel_init, self.in_axes + self.out_axes
            ),
            in_shape + tuple(self.features),
        )
        size_in = math.prod(in_shape)
        y = precision.einsum(
            "ni,io->no",
            x.reshape(-1, size_in),
            kernel.reshape(size_in, -1),
            self.dtype,
            self.out_dtype,
        )
        y = y.reshape(lead + tuple(self.features))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes),
                tuple(self.features),
            )
            y = y + bias.astype(y.dtype)[(None,) * len(lead)]
        return y


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, the time embedding added in between (DDPM)."""

    channels: int
    dropout: float
    norm_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BHWC, emb_BD, *, train: bool):
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), dtype=self.dtype)
        h = nn.swish(group_norm(x_BHWC.shape[-1], self.norm_groups, self.dtype)(x_BHWC))
        h = conv(self.channels)(h)
        h = (
            h
            + nn.Dense(self.channels, dtype=self.dtype)(nn.swish(emb_BD))[:, None, None]
        )
        h = nn.swish(group_norm(self.channels, self.norm_groups, self.dtype)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.channels, kernel_init=nn.initializers.zeros)(h)
        if x_BHWC.shape[-1] != self.channels:
            x_BHWC = nn.Dense(self.channels, dtype=self.dtype)(x_BHWC)
        return x_BHWC + h


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_transpose_2x(x_BHWC: jax.Array, kernel_KKIO: jax.Array) -> jax.Array:
    """The reference: what `nn.ConvTranspose(.., strides=(2, 2), padding="SAME")` computes."""
    return jax.lax.conv_transpose(
        x_BHWC, kernel_KKIO, (2, 2), "SAME", dimension_numbers=_DIMS
    )


def _phase_conv_transpose_2x(x_BHWC: jax.Array, kernel_KKIO: jax.Array) -> jax.Array:
    """The same function as four stride-1 convolutions, interleaved.

    Output pixel (2m + r, 2n + s) only sees the kernel taps of parity
    (r, s) shifted by lax's SAME padding, so each of the four phases is a
    stride-1 convolution of the input with a quarter of the kernel. XLA:CPU
    differentiates these far faster than the transposed convolution's
    weight gradient (18x at DCGAN's 4x4x256 -> 8x8x128 layer)."""
    k = kernel_KKIO.shape[0]
    pad_lo = k - 1 if k <= 2 else -(-k // 2)  # lax's SAME padding for stride 2
    phases = []
    for r in (0, 1):
        row = []
        for s in (0, 1):
            pads = []
            for phase in (r, s):
                first_tap = (pad_lo - phase) % 2
                offset = (phase + first_tap - pad_lo) // 2
                taps = len(range(first_tap, k, 2))
                pads.append((-offset, offset + taps - 1))
            w = kernel_KKIO[(pad_lo - r) % 2 :: 2, (pad_lo - s) % 2 :: 2]
            row.append(
                jax.lax.conv_general_dilated(
                    x_BHWC, w, (1, 1), pads, dimension_numbers=_DIMS
                )
            )
        phases.append(jnp.stack(row, axis=3))  # [B, H, W, s, C]
    y = jnp.stack(phases, axis=2)  # [B, H, r, W, s, C]
    b, h, _, w, _, c = y.shape
    return y.reshape(b, 2 * h, 2 * w, c)


@jax.custom_vjp
def conv_transpose_2x(x_BHWC: jax.Array, kernel_KKIO: jax.Array) -> jax.Array:
    """A stride-2 "SAME" transposed convolution: lax's forward (fastest), and
    gradients through the phase-decomposed form (same function, fast backward)."""
    return _conv_transpose_2x(x_BHWC, kernel_KKIO)


def _conv_transpose_2x_fwd(x_BHWC, kernel_KKIO):
    return _conv_transpose_2x(x_BHWC, kernel_KKIO), (x_BHWC, kernel_KKIO)


def _conv_transpose_2x_bwd(residuals, g_BHWC):
    return jax.vjp(_phase_conv_transpose_2x, *residuals)[1](g_BHWC)


conv_transpose_2x.defvjp(_conv_transpose_2x_fwd, _conv_transpose_2x_bwd)


class ConvTranspose2x(nn.Module):
    """`nn.ConvTranspose(features, (k, k), strides=(2, 2), padding="SAME")` with
    the same params and init, computed by `conv_transpose_2x`."""

    features: int
    kernel_size: int = 4
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        k = self.kernel_size
        if k < 2:
            raise ValueError(
                f"a stride-2 transposed conv needs kernel_size >= 2, not {k}"
            )
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (k, k, x_BHWC.shape[-1], self.features),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x_BHWC, kernel, bias = nn.dtypes.promote_dtype(
            x_BHWC, kernel, bias, dtype=self.dtype
        )
        return conv_transpose_2x(x_BHWC, kernel) + bias[None, None, None, :]


def spectral(layer: nn.Module, enabled: bool):
    """`layer` as a function of (x, update): spectrally normalised (Miyato et al.,
    2018) when `enabled`. The power-iteration vectors live in the "spectral"
    collection; `update` advances them (the family stores them in the state)."""
    if not enabled:
        return lambda x, update: layer(x)
    norm = nn.SpectralNorm(layer, collection_name="spectral")
    return lambda x, update: norm(x, update_stats=update)


class ProjectionHead(nn.Module):
    """The critic's output: a linear score plus, with labels, the projection
    <embed(y), h> of the class embedding onto the features (Miyato & Koyama, 2018)."""

    num_classes: int
    spectral_norm: bool

    @nn.compact
    def __call__(self, h_BD, labels_B, update: bool):
        out_B = spectral(nn.Dense(1), self.spectral_norm)(h_BD, update)[:, 0]
        if self.num_classes:
            embed = nn.Embed(self.num_classes, h_BD.shape[-1])
            e_BD = spectral(embed, self.spectral_norm)(labels_B, update)
            out_B = out_B + jnp.sum(e_BD * h_BD, axis=-1)
        return out_B.astype(jnp.float32)


def with_label(z_BZ: jax.Array, labels_B: jax.Array, num_classes: int) -> jax.Array:
    """A conditional generator's input: the noise, then a learned class embedding."""
    if not num_classes:
        return z_BZ
    e_BZ = nn.Embed(num_classes, z_BZ.shape[-1], name="label_embed")(labels_B)
    return jnp.concatenate([z_BZ, e_BZ.astype(z_BZ.dtype)], axis=-1)


class GANPair(nn.Module):
    """A generator and a discriminator in one module: families call `generate`
    and `discriminate` and keep the "generator" / "discriminator" param subtrees
    as separate roles."""

    generator: nn.Module
    discriminator: nn.Module

    def generate(self, z_BZ: jax.Array, labels_B: jax.Array) -> jax.Array:
        return self.generator(z_BZ, labels_B)

    def discriminate(self, x_BHWC, labels_B, update: bool = False) -> jax.Array:
        return self.discriminator(x_BHWC, labels_B, update=update)

    def __call__(self, z_BZ, x_BHWC, labels_B):
        """Runs both networks (used by init, so every variable is created)."""
        return self.generate(z_BZ, labels_B), self.discriminate(x_BHWC, labels_B)
