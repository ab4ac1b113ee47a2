"""vae_digits' learning rate and EMA decay, on the held-out negative ELBO,
sampled by TPE and pruned by ASHA at the held-out evaluations (every 1000
steps).

  gen-jax sweep --config=configs/vae_digits.py \
    --space=configs/sweeps/vae_digits.py --sweep_dir=runs/sweeps/vae_lr \
    --n_trials=24
"""

import ml_collections


def get_space() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "metric": "eval/heldout/model/loss",
            "direction": "minimize",
            "sampler": {"name": "tpe", "seed": 0},
            # Rungs at 1000, 3000 steps: the heldout evaluator's interval
            # ("eval", the default min_resource) times powers of 3.
            "pruner": {"name": "asha", "reduction_factor": 3},
        }
    )


def suggest(trial) -> dict:
    return {
        "optim.model.lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "train.ema_decay": trial.suggest_categorical("ema_decay", [0.99, 0.999]),
    }
