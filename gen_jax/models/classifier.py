"""A small conv classifier whose penultimate features define a "Fréchet digits
distance" (the role InceptionV3 plays for FID on natural images)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import precision


class ConvClassifier(nn.Module):
    """3x3 convs (stride 2 after the first), mean pool, a `features`-wide layer, logits."""

    channels: Sequence[int]
    features: int
    num_classes: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (features_BD, logits_BV), both float32."""
        dtype = precision.compute_dtype(self.dtype)
        h = x_BHWC.astype(dtype)
        for i, c in enumerate(self.channels):
            h = nn.gelu(nn.Conv(c, (3, 3), strides=1 if i == 0 else 2, dtype=dtype)(h))
        h = jnp.mean(h, axis=(1, 2))
        feats_BD = nn.gelu(nn.Dense(self.features, dtype=dtype)(h))
        logits_BV = nn.Dense(self.num_classes, dtype=dtype)(feats_BD)
        return feats_BD.astype(jnp.float32), logits_BV.astype(jnp.float32)
