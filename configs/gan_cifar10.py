"""SNGAN-style ResNet GAN on CIFAR-10 (Miyato et al. 2018, "Spectral Normalization
for Generative Adversarial Networks", Table 3 and App. B.3).

ResNet generator (ch 256, 3 upsampling blocks from 4x4) and discriminator (ch 128,
4 blocks, the first 2 downsampling, spectral norm, sum pooling), hinge loss,
Adam lr 2e-4 (beta1 0, beta2 0.9), 5 discriminator steps per generator step,
batch 64, 50k generator updates = 250k steps here (a step is one disc update).
Published target (unconditional): SNGAN FID 21.7, Inception Score 8.22; a DCGAN
(configs/gan_cifar10.py:dcgan) reaches FID about 28. Differences: GroupNorm in
place of the generator's BatchNorm; FID from pytorch-fid's Inception weights.

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('cifar10', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax convert-inception --torch_weights=pt_inception-2015-12-05-6726825d.pth
  gen-jax train --config=configs/gan_cifar10.py --workdir=runs/gan_cifar10 \
    --config.data.data_dir=DATA
  gen-jax evaluate --workdir=runs/gan_cifar10 --features=inception \
    --num_samples=50000

`:smoke` runs tiny networks on synthetic 32x32x3 data in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False, dcgan=False)
    c = base.get_config()
    base.gan_defaults(c)
    c.model.name = "resnet_gan"
    c.model.z_dim = 128
    c.model.gen_channels = 256
    c.model.disc_channels = 128
    c.model.gen_blocks = 3
    c.model.disc_blocks = 4
    c.model.disc_down_blocks = 2
    c.model.spectral_norm = True
    # bfloat16 compute on accelerators (params, logits, losses and optimizer
    # state stay float32): the matmul and conv units' native type.
    c.model.dtype = "bfloat16"
    c.gan.update(loss="hinge", conditional=False)  # unconditional, as published
    c.gan.disc_steps = 5
    for role in ("disc", "gen"):
        c.optim[role].update(lr=2e-4, b1=0.0, b2=0.9)
    if arg.dcgan:  # DCGAN at benchmarks/reference.py's shapes (its PyTorch peer's)
        c.model = {
            "name": "dcgan",
            "z_dim": 100,
            "gen_channels": 64,
            "disc_channels": 64,
            "channel_mults": (4, 2, 1),
            "spectral_norm": False,
            "gen_norm": "group",
            "dtype": "bfloat16",
        }
        c.gan.update(loss="non_saturating", disc_steps=1)
        for role in ("disc", "gen"):
            c.optim[role].update(lr=2e-4, b1=0.5, b2=0.999)

    c.data.name = "cifar10"
    c.data.image_size = 32
    c.data.channels = 3

    c.train.num_steps = 250_000
    c.train.batch_size = 64
    c.train.log_every_steps = 500
    c.train.ckpt_every_steps = 5000
    c.train.ema_decay = 0.9999
    c.evals.samples = base.samples_eval(every_steps=5000, num_samples=64)
    c.evals.fid = base.quality_eval("inception", every_steps=25_000, num_samples=10_000)

    if arg.smoke:
        base.shrink_for_smoke(c)
        c.gan.disc_steps = min(c.gan.disc_steps, 2)  # divides log_every_steps
    return c
