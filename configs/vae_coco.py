"""The autoencoder of t2i_coco: a conv VAE on COCO images at 256 px whose
latents are a 32x32x4 image (three stride-2 convs: Stable Diffusion's 8x
downsampling and 4 channels; not its ResNet blocks), a Gaussian likelihood
and a light KL weight, so its posterior means reconstruct well.

  gen-jax train --config=configs/vae_coco.py --workdir=runs/vae_coco \
    --config.data.data_dir=DIR

COCO is tfds's coco_captions (prepare it as array_record under DIR); for
accelerators. `:smoke` runs a few steps on same-shaped synthetic images.
"""

from configs import base, vae_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = vae_digits.get_config()  # the VAE family, its optimizer and evals
    c.model.update(channels=(128, 256, 512), hidden=512, latents=4, spatial=True)
    c.vae.update(likelihood="gaussian", beta=1e-3)
    c.data.update(name="coco_captions", image_size=256, channels=3)
    c.data.update(train_split="train", eval_split="val")
    c.train.update(num_steps=100_000, batch_size=64, ckpt_every_steps=5000)
    c.evals.heldout.update(every_steps=5000, batch_size=64)
    c.evals.samples.every_steps = 5000
    del c.evals["quality"]  # the digits classifier's features fit only digits

    if arg.smoke:
        base.shrink_for_smoke(c)
        c.data.image_size = 16  # the smoke VAE's two convs: 4x4 latents
    return c
