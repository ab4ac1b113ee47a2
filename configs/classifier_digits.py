"""The digits classifier behind the "Fréchet digits distance" of the embedded
defaults (its features are 128-d, taken before the logits).

  gen-jax train --config=configs/classifier_digits.py \
    --workdir=runs/classifier_digits
  gen-jax export-classifier --workdir=runs/classifier_digits \
    --out=gen_jax/assets/digits_classifier.npz

The shipped gen_jax/assets/digits_classifier.npz was made by these commands;
held-out accuracy: see README "Results". `:smoke` runs a few steps.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "classifier"
    c.model.name = "conv_classifier"
    c.model.channels = (32, 64, 128)
    c.model.features = 128
    c.model.dtype = "float32"

    c.data.name = "digits"
    c.data.image_size = 8
    c.data.channels = 1

    c.optim.model.lr = 2e-3
    c.optim.model.weight_decay = 0.01
    # Stopped early: a classifier that fits its train split tightly maps held-out
    # digits (and samples) far from the train features, inflating every distance.
    c.train.num_steps = 500
    c.train.batch_size = 128
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 500
    c.train.ema_decay = 0.99
    c.evals.heldout = base.heldout_eval(every_steps=250, batch_size=100)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
