"""Class-conditional EDM (Karras et al. 2022) on the 8x8 digits: ddpm_digits'
UNet, trained with EDM's preconditioning, noise distribution and loss weight,
sampled with EDM's Heun sampler (18 steps = 35 model calls).

  gen-jax train --config=configs/edm_digits.py --workdir=runs/edm_digits
  gen-jax sample --workdir=runs/edm_digits --sampler=heun --sampler_steps=18 \
    --guidance=2.0

`:smoke` runs a few steps in seconds.
"""

from configs import base, ddpm_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = ddpm_digits.get_config()  # the same data, UNet, optimizer and evals
    c.diffusion.update(objective="edm", sampler="heun", sample_steps=18)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
