"""Class-conditional DDPM on scikit-learn's bundled 8x8 digits (no download).

  gen-jax train --config=configs/ddpm_digits.py --workdir=runs/ddpm_digits
  gen-jax sample --workdir=runs/ddpm_digits --sampler=dpm_solver_pp_2m \
    --sampler_steps=20 --guidance=2.0

Trained with label dropout 0.1, so classifier-free guidance works at sampling.
Expected (2-core CPU, measured 2026-11-23): ~5.5 min at 9-10 steps/s,
recognisable digits of the requested classes in the sample grid, held-out bound
4.86 bits/dim (215.5 nats / image), Fréchet digits distance 3.45 (1000 DDIM-50
samples vs the train split; recall 0.93). `:smoke` runs a few steps in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "diffusion"
    c.model.name = "unet"
    c.model.channels = 32
    c.model.channel_mults = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = (4,)
    c.model.dropout = 0.1
    c.model.norm_groups = 8
    c.model.dtype = "float32"
    c.diffusion = base.diffusion_defaults()
    c.diffusion.conditional = True

    c.data.name = "digits"
    c.data.image_size = 8
    c.data.channels = 1

    c.optim.model.lr = 1e-3
    c.optim.model.warmup_steps = 200
    # Batch 64 keeps the default run to a few minutes on a laptop's CPU, where
    # this UNet's 3x3 convolutions dominate the step.
    c.train.num_steps = 2000
    c.train.batch_size = 64
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 1000
    c.train.ema_decay = 0.999
    c.evals.heldout = base.heldout_eval(every_steps=1000, batch_size=100)
    c.evals.samples = base.samples_eval(every_steps=1000, num_samples=80)
    c.evals.quality = base.quality_eval(every_steps=2000)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
