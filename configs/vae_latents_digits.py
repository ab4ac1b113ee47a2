"""The autoencoder of latent diffusion on the 8x8 digits: a conv VAE whose
latents are a 4x4x4 image (one stride-2 conv, no MLP), trained with a light KL
weight (beta 0.1) so its posterior means reconstruct well; ldm_digits trains a
flow DiT on them.

  gen-jax train --config=configs/vae_latents_digits.py \
    --workdir=runs/vae_latents_digits

`:smoke` runs a few steps on the same data in seconds.
"""

from configs import base, vae_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = vae_digits.get_config()  # the same data, optimizer and evals
    c.model.update(channels=(64,), hidden=64, latents=4, spatial=True)
    c.vae.beta = 0.1
    c.train.num_steps = 3000

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
