"""lm_pydoc's learning rate, warm-up and weight decay, on the held-out loss
(nats per byte), pruned by ASHA at the held-out evaluations (every 500
steps).

  gen-jax sweep --config=configs/lm_pydoc.py \
    --space=configs/sweeps/lm_pydoc.py --sweep_dir=runs/sweeps/lm --n_trials=16
"""

import ml_collections


def get_space() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "metric": "eval/heldout/model/loss",
            "direction": "minimize",
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "asha", "reduction_factor": 3},
        }
    )


def suggest(trial) -> dict:
    return {
        "optim.model.lr": trial.suggest_float("lr", 5e-4, 5e-3, log=True),
        "optim.model.warmup_steps": trial.suggest_int(
            "warmup_steps", 50, 300, log=True
        ),
        "optim.model.weight_decay": trial.suggest_float("weight_decay", 0.0, 0.2),
    }
