"""MODELS: the explicit map from `config.model.name` to a Linen module class (or,
for the GAN pairs, a function building one from the same keyword fields)."""

from gen_jax.models import classifier, conv, dcgan, dit, sngan, transformer, unet

MODELS = {
    "conv_classifier": classifier.ConvClassifier,
    "conv_vae": conv.ConvVAE,
    "dcgan": dcgan.make_pair,
    "dit": dit.DiT,
    "resnet_gan": sngan.make_pair,
    "transformer": transformer.Transformer,
    "unet": unet.UNet,
}
