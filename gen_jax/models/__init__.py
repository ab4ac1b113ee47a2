"""MODELS: the explicit map from `config.model.name` to a Linen module class."""

from gen_jax.models import conv, transformer, unet

MODELS = {
    "conv_vae": conv.ConvVAE,
    "transformer": transformer.Transformer,
    "unet": unet.UNet,
}
