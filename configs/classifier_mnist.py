"""The mnist classifier behind gan_mnist's "Fréchet digits distance" (128-d
features before the logits), exported for the evaluators by the second command.

  gen-jax train --config=configs/classifier_mnist.py \
    --workdir=runs/classifier_mnist --config.data.data_dir=DATA
  gen-jax export-classifier --workdir=runs/classifier_mnist \
    --out=runs/classifier_mnist.npz

Expected: held-out accuracy above 99%. `:smoke` uses synthetic data of mnist's shape.
"""

from configs import base, classifier_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = classifier_digits.get_config()  # same network; mnist's data and length
    c.data.update(name="mnist", image_size=28, channels=1)
    c.train.update(num_steps=2000, ckpt_every_steps=1000)
    c.evals.heldout.every_steps = 1000

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
