"""Class-conditional DDPM on tfds mnist (prepared as array_record under data_dir).

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('mnist', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/ddpm_mnist.py --workdir=runs/ddpm_mnist \
    --config.data.data_dir=DATA
  gen-jax sample --workdir=runs/ddpm_mnist --guidance=3.0

UNet ch 64, mult (1,2,2) over 28 -> 14 -> 7, attention at 7x7, label dropout
0.1 for classifier-free guidance. `:smoke` uses synthetic data of mnist's shape.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "diffusion"
    c.model.name = "unet"
    c.model.channels = 64
    c.model.channel_mults = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (7,)
    c.model.dropout = 0.1
    c.model.norm_groups = 32
    c.model.dtype = "float32"
    c.diffusion = base.diffusion_defaults()
    c.diffusion.conditional = True

    c.data.name = "mnist"
    c.data.image_size = 28
    c.data.channels = 1

    c.optim.model.update(lr=2e-4, warmup_steps=1000, final_lr_ratio=0.1)
    c.train.num_steps = 50_000
    c.train.batch_size = 128
    c.train.log_every_steps = 500
    c.train.ckpt_every_steps = 5000
    c.train.ema_decay = 0.9995
    c.evals.heldout = base.heldout_eval(every_steps=10_000, batch_size=500)
    c.evals.samples = base.samples_eval(every_steps=5000, num_samples=80)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
