"""The mnist classifier behind gan_mnist's "Fréchet digits distance" (128-d
features before the logits); exported with gen_jax.features for the evaluators.

  python -m gen_jax.main --config=configs/classifier_mnist.py \
    --workdir=runs/classifier_mnist --config.data.data_dir=DATA
  python -m gen_jax.features --workdir=runs/classifier_mnist \
    --out=runs/classifier_mnist.npz

Expected: held-out accuracy above 99%. `:smoke` uses synthetic data of mnist's shape.
"""

from configs import classifier_digits


def get_config(arg: str | None = None):
    c = classifier_digits.get_config(arg)  # same network; mnist's data and length
    c.data.update(name="mnist", image_size=28, channels=1)
    if c.train.num_steps > 100:  # the `:smoke` variant keeps its few steps
        c.train.update(num_steps=2000, ckpt_every_steps=1000)
        c.evals.heldout.every_steps = 1000
    return c
