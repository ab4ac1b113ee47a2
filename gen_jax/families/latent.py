"""Latent diffusion (Rombach et al. 2022) on gen_jax's own VAE: the diffusion
family trained on an autoencoder's latents, its samples decoded to pixels.

With `config.latent.autoencoder` set (a VAE run's workdir, whose model section
`config.latent.model` repeats), the family's params are {"model": the
denoiser, AUTOENCODER: {"model": the VAE's params, "scale": s}}, the second
frozen (no optimizer, no EMA). Each batch is encoded on the fly to s times the
posterior mean (the encoder is a few convs, cheap beside the denoiser, and a
cache would tie the run to one data order); train.py fills the VAE's EMA
params and s = 1 / std of the posterior means over the first
`config.latent.scale_batches` training batches (SD's scale factor, measured
not fixed) at step 0, and the checkpoint carries both from then on, so
sampling, evaluation and export need only this run. Samples are decoded to
pixels in [-1, 1], so the quality evaluators score them as any image family's.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import vae
from gen_jax.families.family import (
    Family,
    Load,
    Params,
    heldout_metrics,
    image_shape,
    images_sampler,
)

AUTOENCODER = "autoencoder"  # the params entry of the frozen autoencoder


def latent_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """[H, W, C] of the autoencoder's latent image."""
    shape = vae.make_model(config.latent.model, config.data).latent_shape
    if len(shape) != 3 or shape[0] != shape[1]:
        raise ValueError(
            f"config.latent.model has latents of shape {shape}: latent diffusion "
            "needs a square latent image (set config.latent.model.spatial=True)"
        )
    return shape


def latent_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with `data` describing the latent images: what the inner
    diffusion family is built from."""
    side, _, channels = latent_shape(config)
    inner = ml_collections.ConfigDict(config.to_dict())
    inner.data.update(image_size=side, channels=channels)
    return inner


def wrap(config: ml_collections.ConfigDict, inner: Family) -> Family:
    """`inner` (a diffusion family built on `latent_config(config)`) trained on
    the autoencoder's scaled latents and sampled through its decoder."""
    if inner.roles != ["model"]:
        raise ValueError("config.latent wraps a single-model diffusion family")
    autoencoder = vae.make_model(config.latent.model, config.data)
    likelihood = config.latent.likelihood
    shape = latent_shape(config)
    num_classes = config.data.num_classes if config.diffusion.conditional else 0

    def finish(loaded: Params, batches) -> tuple[Params, dict]:
        """The VAE's EMA params and the scale measured on `batches`."""
        scale = latent_scale(config, loaded["model"], batches)
        return {"model": loaded["model"], "scale": scale}, {
            "latent.scale": float(scale)
        }

    def split(params: Params):
        return params[AUTOENCODER], {
            k: v for k, v in params.items() if k != AUTOENCODER
        }

    def encode(ae: Params, images):
        mean, _ = autoencoder.apply(
            {"params": ae["model"]}, images, method=autoencoder.encode
        )
        return jax.lax.stop_gradient(mean * ae["scale"])

    def decode(ae: Params, z):
        out = autoencoder.apply(
            {"params": ae["model"]}, z / ae["scale"], method=autoencoder.decode
        )
        return vae.decoded_image(out, likelihood)

    def on_latents(batch, ae):
        return {**batch, "image": encode(ae, batch["image"])}

    def init(key: jax.Array, batch) -> Params:
        key_ae, key_model = jax.random.split(key)
        ae = autoencoder.init(key_ae, batch["image"][:1], jnp.zeros((1, *shape)))[
            "params"
        ]
        latents = {**batch, "image": jnp.zeros((1, *shape))}
        if "label" in batch:
            latents["label"] = batch["label"][:1]
        params = inner.init(key_model, latents)
        return {
            **params,
            AUTOENCODER: {"model": ae, "scale": jnp.ones((), jnp.float32)},
        }

    def loss(params: Params, batch, key: jax.Array):
        ae, rest = split(params)
        return inner.losses["model"](rest, on_latents(batch, ae), key)

    def generate(
        params: Params,
        keys_N,
        labels_N,
        guidance_N,
        interval=None,
        prompt=None,
        negative=None,
    ):
        """`inner.generate`'s images (with a text encoder, from its prompt
        and negative prompt), decoded."""
        ae, rest = split(params)
        z = inner.generate(
            rest,
            keys_N,
            labels_N,
            guidance_N,
            interval,
            prompt=prompt,
            negative=negative,
        )
        return decode(ae, z)

    def apply(params: Params, batch, key: jax.Array):
        ae, rest = split(params)
        return inner.apply(rest, on_latents(batch, ae), key)

    def reconstruct(params: Params, batch, key: jax.Array):
        """The autoencoder's round trip through the scaled latents."""
        del key
        ae, _ = split(params)
        return decode(ae, encode(ae, batch["image"]))

    def evaluate(params: Params, batch, key: jax.Array):
        ae, rest = split(params)
        return heldout_metrics(inner, rest, on_latents(batch, ae), key)

    return Family(
        init=init,
        losses={"model": loss},
        generate=generate,
        sample=images_sampler(generate, num_classes, config.diffusion.guidance_scale),
        apply=apply,
        reconstruct=reconstruct,
        evaluate=evaluate,
        per_example=inner.per_example,
        frozen=(AUTOENCODER, *inner.frozen),  # and a text encoder, if any
        # Decoded samples: pixels of config.data's shape.
        images=dataclasses.replace(inner.images, shape=image_shape(config.data)),
        loads=(
            Load(
                AUTOENCODER,
                config.latent.autoencoder,
                "config.latent.autoencoder",
                "train the VAE first (e.g. gen-jax train "
                "--config=configs/vae_latents_digits.py "
                f"--workdir={config.latent.autoencoder})",
                finish,
                batches=config.latent.scale_batches,
            ),
            *inner.loads,
        ),
    )


def latent_scale(config, autoencoder_params: Params, batches) -> jax.Array:
    """1 / std of the posterior means over `batches` (pixel batches): the
    scale that gives the denoiser unit-variance latents."""
    model = vae.make_model(config.latent.model, config.data)
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode)[0])
    means = jnp.concatenate(
        [encode(autoencoder_params, b["image"]).reshape(-1) for b in batches]
    )
    std = jnp.std(means)
    if not jnp.isfinite(std) or std <= 0:
        raise ValueError(
            f"the autoencoder's posterior means have std {float(std)}: is "
            f"{config.latent.autoencoder!r} a trained VAE run?"
        )
    return (1 / std).astype(jnp.float32)
