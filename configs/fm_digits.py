"""Class-conditional flow matching with a DiT on the 8x8 digits: rectified flow
(x_t = (1 - t) x0 + t eps, velocity target, SD3's logit-normal t) on a DiT of
the LM's blocks (patch 2: 16 tokens of width 128, 4 layers), sampled with
Heun (18 steps = 35 model calls).

  gen-jax train --config=configs/fm_digits.py --workdir=runs/fm_digits
  gen-jax sample --workdir=runs/fm_digits --sampler=euler --sampler_steps=10

`:smoke` runs a few steps in seconds.
"""

import ml_collections

from configs import base, ddpm_digits


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = ddpm_digits.get_config()  # the same data, optimizer, steps and evals
    c.model = ml_collections.ConfigDict(
        {
            "name": "dit",
            "patch_size": 2,
            "num_layers": 4,
            "num_heads": 4,
            "embed_dim": 128,
            "mlp_ratio": 4,
            "dropout": 0.0,
            "scan_layers": False,
            "dtype": "float32",
        }
    )
    c.diffusion.update(objective="flow", sampler="heun", sample_steps=18)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
