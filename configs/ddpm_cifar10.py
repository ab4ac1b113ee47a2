"""DDPM on CIFAR-10 with the published recipe (Ho et al. 2020, "Denoising Diffusion
Probabilistic Models", Sec. 4 and App. B).

35.7M-parameter UNet (ch 128, mult (1,2,2,2), 2 res blocks, attention at 16x16,
dropout 0.1), T=1000 linear betas 1e-4..0.02, eps prediction with L_simple, Adam
2e-4 after 5000 warmup steps (constant after), batch 128, EMA 0.9999, grad clip 1,
800k steps. Published target: FID 3.17, Inception Score 9.46, NLL <= 3.75 bits/dim.

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('cifar10', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/ddpm_cifar10.py --workdir=runs/ddpm_cifar10 \
    --config.data.data_dir=DATA

`:smoke` runs a tiny UNet on synthetic 32x32x3 data in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "diffusion"
    c.model.name = "unet"
    c.model.channels = 128
    c.model.channel_mults = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)
    c.model.dropout = 0.1
    c.model.norm_groups = 32
    # bfloat16 compute on accelerators (params, logits, losses and optimizer
    # state stay float32): the matmul and conv units' native type.
    c.model.dtype = "bfloat16"
    c.diffusion = base.diffusion_defaults()
    c.diffusion.update(conditional=False, label_dropout=0.0)  # as published

    c.data.name = "cifar10"
    c.data.image_size = 32
    c.data.channels = 3

    # Adam (no weight decay), constant lr after warmup: final_lr_ratio = 1.
    c.optim.model.update(
        lr=2e-4,
        b1=0.9,
        b2=0.999,
        weight_decay=0.0,
        warmup_steps=5000,
        final_lr_ratio=1.0,
        clip_norm=1.0,
    )
    c.train.num_steps = 800_000
    c.train.batch_size = 128
    c.train.log_every_steps = 1000
    c.train.ckpt_every_steps = 10_000
    c.train.ema_decay = 0.9999
    c.evals.heldout = base.heldout_eval(every_steps=50_000, batch_size=500)
    c.evals.samples = base.samples_eval(every_steps=10_000, num_samples=64)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
