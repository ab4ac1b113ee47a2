"""fm_digits' objective (flow or EDM), learning rate and EMA decay, with each
objective's own noise-level mean (flow's `t_mean`, EDM's `p_mean`: a
conditional, define-by-run space), on the Fréchet digits distance of 500
samples, pruned by ASHA at the quality evaluations.

  gen-jax sweep --config=configs/fm_digits.py \
    --space=configs/sweeps/fm_digits.py --sweep_dir=runs/sweeps/fm \
    --n_trials=24 --config.evals.quality.every_steps=500 \
    --config.evals.quality.num_samples=500

(fm_digits scores quality once, at its last step: the overrides give the
pruner rungs.)
"""

import ml_collections


def get_space() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "metric": "eval/quality/frechet_distance",
            "direction": "minimize",
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "asha", "reduction_factor": 2},
        }
    )


def suggest(trial) -> dict:
    objective = trial.suggest_categorical("objective", ["flow", "edm"])
    out = {
        "diffusion.objective": objective,
        "optim.model.lr": trial.suggest_float("lr", 2e-4, 3e-3, log=True),
        "train.ema_decay": trial.suggest_categorical("ema_decay", [0.999, 0.9999]),
    }
    if objective == "flow":
        out["diffusion.t_mean"] = trial.suggest_float("t_mean", -1.0, 1.0)
    else:
        out["diffusion.p_mean"] = trial.suggest_float("p_mean", -1.6, -0.8)
    return out
