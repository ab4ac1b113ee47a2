"""The mnist classifier behind gan_mnist's "Fréchet digits distance" (128-d
features before the logits); exported with gen_jax.features for the evaluators.

  python -m gen_jax.main --config=configs/classifier_mnist.py \
    --workdir=runs/classifier_mnist --config.data.data_dir=DATA
  python -m gen_jax.features --workdir=runs/classifier_mnist \
    --out=runs/classifier_mnist.npz

Expected: held-out accuracy above 99%. `:smoke` uses synthetic data of mnist's shape.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    c.family = "classifier"
    c.model.name = "conv_classifier"
    c.model.channels = (32, 64, 128)
    c.model.features = 128
    c.model.num_classes = 10
    c.model.dtype = "float32"

    c.data.name = "mnist"
    c.data.image_size = 28
    c.data.channels = 1

    c.optim.model.lr = 2e-3
    c.optim.model.weight_decay = 0.01
    c.train.num_steps = 2000
    c.train.batch_size = 128
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 1000
    c.evals.heldout = {"type": "heldout", "every_steps": 1000, "batch_size": 100}

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
