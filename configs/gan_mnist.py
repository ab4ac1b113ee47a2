"""Class-conditional DCGAN on tfds mnist: non-saturating loss with a lazy R1
penalty (gamma 1, every 4 steps), no spectral norm, projection discriminator.

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('mnist', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/classifier_mnist.py \
    --workdir=runs/classifier_mnist --config.data.data_dir=DATA
  gen-jax export-classifier --workdir=runs/classifier_mnist \
    --out=runs/classifier_mnist.npz
  gen-jax train --config=configs/gan_mnist.py --workdir=runs/gan_mnist \
    --config.data.data_dir=DATA

The "Fréchet digits distance" here uses the mnist classifier the first two
commands train and export. `:smoke` swaps in synthetic data of mnist's shape.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    base.gan_defaults(c)
    c.model.name = "dcgan"
    c.model.z_dim = 100
    c.model.gen_channels = 64
    c.model.disc_channels = 64
    c.model.channel_mults = (2, 1)  # 7x7 -> 14x14 -> 28x28
    c.model.spectral_norm = False
    c.model.gen_norm = "group"
    c.model.dtype = "float32"
    c.gan.update(loss="non_saturating", conditional=True, r1_gamma=1.0, r1_every=4)

    c.data.name = "mnist"
    c.data.image_size = 28
    c.data.channels = 1

    c.train.num_steps = 20_000
    c.train.batch_size = 64
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 2000
    c.evals.samples = base.samples_eval(every_steps=2000, num_samples=80)
    c.evals.quality = base.quality_eval(
        "classifier", every_steps=5000, weights="runs/classifier_mnist.npz"
    )

    if arg.smoke:
        base.shrink_for_smoke(c)
        c.gan.r1_every = 2  # divides log_every_steps
    return c
