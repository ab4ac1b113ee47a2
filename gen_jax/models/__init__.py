"""MODELS: the explicit map from `config.model.name` to a Linen module class."""

from gen_jax.models import conv, unet

MODELS = {
    "conv_vae": conv.ConvVAE,
    "unet": unet.UNet,
}
