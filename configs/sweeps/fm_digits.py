"""fm_digits' objective (flow or EDM), learning rate and EMA decay, with each
objective's own noise-level mean (flow's `t_mean`, EDM's `p_mean`: a
conditional, define-by-run space), on the Fréchet digits distance of 300
samples, pruned by ASHA (η=3) at the quality evaluations.

  gen-jax sweep --config=configs/fm_digits.py \
    --space=configs/sweeps/fm_digits.py --sweep_dir=runs/sweeps/fm \
    --n_trials=24 --config.train.num_steps=4000 \
    --config.evals.quality.every_steps=600 \
    --config.evals.quality.num_samples=300

(fm_digits scores quality once, at its last step: the overrides give the
pruner rungs, 600 and 1800.) The settings the README measured against the
grid in full: the objectives' learning curves cross near step 500, so the
first rung sits past it, and 4000 steps make 600 a small share of a trial
(32% of the grid's steps, its best within seed noise; at 2000 steps with
rungs from 200, ASHA kept the grid's second).
"""

import ml_collections


def get_space() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "metric": "eval/quality/frechet_distance",
            "direction": "minimize",
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "asha", "reduction_factor": 3},
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
