"""EDM on CIFAR-10: Karras et al. 2022's objective and sampler ("Elucidating
the Design Space of Diffusion-Based Generative Models", Tables 1 and 7) on
ddpm_cifar10's DDPM UNet.

EDM's preconditioning (sigma_data 0.5, c_skip / c_out / c_in / c_noise), its
training noise (ln sigma ~ N(-1.2, 1.2^2)) and loss weight, and its
deterministic Heun sampler on the rho = 7 grid from sigma 80 to 0.002 in 18
steps (35 model calls). Optimiser as EDM's CIFAR-10 runs: Adam lr 1e-3 after
a warmup, batch 512, dropout 0.13; class-conditional with label dropout 0.1
for guidance (`:uncond` for EDM's unconditional setting).

Published (EDM, 35 NFE, its own DDPM++ / NCSN++ networks trained for 200 M
images): FID 1.97 unconditional, 1.79 conditional. How this recipe differs:
the network is DDPM's UNet (35.7 M params: 128 channels, (1, 2, 2, 2), one
attention resolution), not DDPM++ (56 M; BigGAN-style resampling residual
blocks, attention at 16x16 with more heads, a noise embedding with
`channel_mult_noise` 1 and positional frequencies), so do not expect 1.97;
gen_jax has no non-leaking augmentation pipeline (EDM uses it for CIFAR-10,
p = 0.12); and the EMA is a fixed decay 0.9999 rather than EDM's 0.5 M-image
half-life (about 0.99966 per step at batch 512). 400k steps x 512 = 205 M
images, EDM's budget.

  gen-jax train --config=configs/edm_cifar10.py --workdir=runs/edm_cifar10 \
    --config.data.data_dir=DATA
  gen-jax evaluate --workdir=runs/edm_cifar10 --features=inception \
    --num_samples=50000 --sampler=heun --sampler_steps=18

`:smoke` runs a tiny UNet on synthetic 32x32x3 data in seconds.
"""

from configs import base, ddpm_cifar10


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False, uncond=False)
    c = ddpm_cifar10.get_config()  # the UNet, data and bf16 compute
    c.model.dropout = 0.13
    c.data.num_classes = 10
    c.diffusion.update(
        objective="edm",
        sampler="heun",
        sample_steps=18,
        conditional=not arg.uncond,
        label_dropout=0.0 if arg.uncond else 0.1,
        sigma_data=0.5,
        p_mean=-1.2,
        p_std=1.2,
        sigma_min=0.002,
        sigma_max=80.0,
        rho=7.0,
    )
    c.optim.model.update(lr=1e-3, warmup_steps=10_000, clip_norm=0.0)
    c.train.num_steps = 400_000
    c.train.batch_size = 512

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
