"""A multi-objective sweep of fm_digits: the Fréchet digits distance against
the sampler's model calls (both minimised), over the learning rate, the
sampler and its step count; NSGA-II, no pruning (Optuna prunes single-objective
studies only). Euler and DPM-Solver++(2M) make one model call per step, so
`config.diffusion.sample_steps` is the calls. `gen-jax sweep --report` prints
the Pareto front, writes each front trial's command and plots the front.

  gen-jax sweep --config=configs/fm_digits.py \
    --space=configs/sweeps/fm_digits_pareto.py --sweep_dir=runs/sweeps/fm_pareto \
    --n_trials=16 --config.evals.quality.num_samples=500
"""

import ml_collections


def get_space() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "metric": (
                "eval/quality/frechet_distance",
                "config.diffusion.sample_steps",
            ),
            "direction": ("minimize", "minimize"),
            "sampler": {"name": "nsga2", "seed": 0, "population_size": 8},
            "pruner": {"name": "none"},
        }
    )


def suggest(trial) -> dict:
    return {
        "optim.model.lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True),
        "diffusion.sampler": trial.suggest_categorical(
            "sampler", ["euler", "dpm_solver_pp_2m"]
        ),
        "diffusion.sample_steps": trial.suggest_int("sample_steps", 4, 32, log=True),
    }
