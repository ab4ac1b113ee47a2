"""Variational autoencoder: ELBO = reconstruction + beta * KL (Kingma & Welling, 2014)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.families.family import (
    Batch,
    Family,
    Images,
    Metrics,
    Params,
    check_name,
    image_shape,
    images_sampler,
    normal_per_key,
)
from gen_jax.models import MODELS

LIKELIHOODS = ("bernoulli", "gaussian")


def gaussian_kl(mean_BZ: jax.Array, logvar_BZ: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example (summed over every
    latent axis: a vector or a latent image), in nats."""
    kl = jnp.exp(logvar_BZ) + mean_BZ**2 - 1.0 - logvar_BZ
    return 0.5 * jnp.sum(kl, axis=tuple(range(1, kl.ndim)))


def reconstruction_nll(
    out_BHWC: jax.Array, x_BHWC: jax.Array, likelihood: str, gaussian_scale: float
) -> jax.Array:
    """-log p(x | z) per example, in nats; `x` in [-1, 1]."""
    if likelihood == "bernoulli":
        # Targets are grey levels in [0, 1], the usual (unnormalised) Bernoulli VAE.
        nll = optax.sigmoid_binary_cross_entropy(out_BHWC, (x_BHWC + 1) / 2)
    elif likelihood == "gaussian":
        nll = (
            0.5 * ((x_BHWC - out_BHWC) / gaussian_scale) ** 2
            + math.log(gaussian_scale)
            + 0.5 * math.log(2 * math.pi)
        )
    else:
        raise ValueError(
            f"unknown config.vae.likelihood {likelihood!r}; "
            f"valid: {', '.join(LIKELIHOODS)}"
        )
    return jnp.sum(nll, axis=(1, 2, 3))


def decoded_image(out_BHWC: jax.Array, likelihood: str) -> jax.Array:
    """The decoder's mean image, mapped to [-1, 1]."""
    if likelihood == "bernoulli":
        return 2 * jax.nn.sigmoid(out_BHWC) - 1
    return jnp.clip(out_BHWC, -1, 1)


def make_model(model_config: ml_collections.ConfigDict, data_config):
    """The VAE network of a `config.model` section for `config.data`'s images
    (also latent diffusion's autoencoder, families/latent.py)."""
    check_name("config.model.name", model_config.name, MODELS)
    kwargs = {k: v for k, v in model_config.items() if k != "name"}
    return MODELS[model_config.name](
        **kwargs, image_size=data_config.image_size, out_channels=data_config.channels
    )


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the VAE family from `config.model`, `config.vae` and `config.data`."""
    check_name("config.vae.likelihood", config.vae.likelihood, LIKELIHOODS)
    model = make_model(config.model, config.data)
    likelihood, beta = config.vae.likelihood, config.vae.beta
    scale = config.vae.gaussian_scale

    def init(key: jax.Array, batch: Batch) -> Params:
        z_BZ = jnp.zeros((1, *model.latent_shape))
        return {"model": model.init(key, batch["image"][:1], z_BZ)["params"]}

    def forward(params: Params, x_BHWC: jax.Array, key: jax.Array):
        """The decoder output for a posterior sample of each image, and the
        posterior's mean and log-variance."""
        p = {"params": params["model"]}
        mean_BZ, logvar_BZ = model.apply(p, x_BHWC, method=model.encode)
        # Reparameterisation trick: z = mean + sigma * eps keeps z differentiable.
        eps_BZ = jax.random.normal(key, mean_BZ.shape)
        z_BZ = mean_BZ + jnp.exp(0.5 * logvar_BZ) * eps_BZ
        return model.apply(p, z_BZ, method=model.decode), mean_BZ, logvar_BZ

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return forward(params, batch["image"], key)[0]

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        x_BHWC = batch["image"]
        out_BHWC, mean_BZ, logvar_BZ = forward(params, x_BHWC, key)
        nll_B = reconstruction_nll(out_BHWC, x_BHWC, likelihood, scale)
        kl_B = gaussian_kl(mean_BZ, logvar_BZ)
        nelbo_B = nll_B + kl_B
        dims = math.prod(x_BHWC.shape[1:])
        metrics = {
            "nll": jnp.mean(nll_B),
            "kl": jnp.mean(kl_B),
            "nelbo": jnp.mean(nelbo_B),  # nats per image
            "bits_per_dim": jnp.mean(nelbo_B) / (dims * math.log(2)),
        }
        return jnp.mean(nll_B + beta * kl_B), metrics

    def generate(params: Params, keys_N, labels_N, guidance_N) -> jax.Array:
        del labels_N, guidance_N  # unconditional
        z_NZ = normal_per_key(keys_N, model.latent_shape)
        out = model.apply({"params": params["model"]}, z_NZ, method=model.decode)
        return decoded_image(out, likelihood)

    def reconstruct(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        del key  # the posterior mean: reconstructions are deterministic
        p = {"params": params["model"]}
        mean_BZ, _ = model.apply(p, batch["image"], method=model.encode)
        return decoded_image(model.apply(p, mean_BZ, method=model.decode), likelihood)

    return Family(
        init=init,
        losses={"model": loss},
        generate=generate,
        sample=images_sampler(generate, 0),
        apply=apply,
        reconstruct=reconstruct,
        images=Images(image_shape(config.data)),
    )
