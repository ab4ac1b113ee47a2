"""Conv VAE on tfds mnist (prepared as array_record under --config.data.data_dir).

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('mnist', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/vae_mnist.py --workdir=runs/vae_mnist \
    --config.data.data_dir=DATA

Shapes follow the classic conv VAE (32-64 k4 s2, fc 256, 20 latents, batch 128).
Expected: held-out negative ELBO near 80-90 nats (Bernoulli likelihood on
grey levels) after 20k steps. `:smoke` swaps in synthetic data of mnist's shape.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "vae"
    c.model.name = "conv_vae"
    c.model.channels = (32, 64)
    c.model.kernel_size = 4
    c.model.hidden = 256
    c.model.latents = 20
    c.model.dtype = "float32"
    c.vae = base.vae_defaults()

    c.data.name = "mnist"
    c.data.image_size = 28
    c.data.channels = 1

    c.optim.model.lr = 1e-3
    c.train.num_steps = 20_000
    c.train.batch_size = 128
    c.train.log_every_steps = 200
    c.train.ckpt_every_steps = 2000
    c.evals.heldout = base.heldout_eval(every_steps=2000, batch_size=500)
    c.evals.samples = base.samples_eval(every_steps=5000, num_samples=64)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
