"""Latent flow matching on the 8x8 digits: fm_digits' flow DiT (patch 1: the
16 positions of a 4x4x4 latent image) trained on the latents of
vae_latents_digits' VAE, its samples decoded to pixels and scored there.

  gen-jax train --config=configs/vae_latents_digits.py \
    --workdir=runs/vae_latents_digits
  gen-jax train --config=configs/ldm_digits.py --workdir=runs/ldm_digits \
    --config.latent.autoencoder=runs/vae_latents_digits
  gen-jax sample --workdir=runs/ldm_digits --sampler=heun --sampler_steps=18
  gen-jax evaluate --workdir=runs/ldm_digits --sampler=euler --sampler_steps=10

`config.latent.model` repeats the VAE config's model section (the run's
shapes are fixed before any checkpoint is read); a VAE run of another shape
fails to load with both shapes named. `:smoke` pairs with
vae_latents_digits.py:smoke.
"""

from configs import base, fm_digits, vae_latents_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = fm_digits.get_config()  # flow + DiT, the digits data, optimizer and evals
    c.model.patch_size = 1
    autoencoder = vae_latents_digits.get_config("smoke" if arg.smoke else None)
    c.latent.update(
        autoencoder="runs/vae_latents_digits",
        model=autoencoder.model.to_dict(),
        likelihood=autoencoder.vae.likelihood,
    )

    if arg.smoke:
        base.shrink_for_smoke(c)
        c.latent.scale_batches = 2
    return c
