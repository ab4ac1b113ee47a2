"""MODELS: the explicit map from `config.model.name` to a Linen module class."""

from gen_jax.models import classifier, conv, dcgan, sngan, transformer, unet

MODELS = {
    "conv_classifier": classifier.ConvClassifier,
    "conv_vae": conv.ConvVAE,
    "dcgan": dcgan.DCGAN,
    "resnet_gan": sngan.ResNetGAN,
    "transformer": transformer.Transformer,
    "unet": unet.UNet,
}
