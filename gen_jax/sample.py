"""Writes samples from a workdir's newest checkpoint (EMA params): a PNG grid and an .npz.

  python -m gen_jax.sample --workdir=runs/ddpm_digits --num_samples=64 \
    --sampler=ddim --steps=50 --guidance=2.0 --seed=0
"""

import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_NUM = flags.DEFINE_integer("num_samples", 64, "How many samples.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_SAMPLER = flags.DEFINE_string(
    "sampler",
    None,
    "Diffusion: ddpm | ddim | dpm_solver_pp_2m (default: the run's config).",
)
_STEPS = flags.DEFINE_integer("steps", None, "Diffusion: sampler steps.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Diffusion: guidance scale.")
_ETA = flags.DEFINE_float("eta", None, "Diffusion: DDIM eta.")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to its workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def run(
    workdir: str,
    *,
    num_samples: int,
    seed: int = 0,
    diffusion_overrides: dict | None = None,
) -> str:
    """Samples `num_samples` images; returns the path prefix of the files written."""
    from gen_jax import checkpoint, metrics, train

    config = load_config(workdir)
    overrides = {k: v for k, v in (diffusion_overrides or {}).items() if v is not None}
    if overrides and config.family != "diffusion":
        raise ValueError(
            f"--sampler/--steps/--guidance/--eta apply to diffusion runs; "
            f"{workdir!r} trains {config.family!r}"
        )
    if overrides:
        config.diffusion.update(overrides)
    run_setup = train.setup(config)
    manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
    state = checkpoint.restore_latest(manager, run_setup.abstract_state, None)
    manager.close()
    if state is None:
        raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    repl = jax.sharding.NamedSharding(run_setup.mesh, jax.sharding.PartitionSpec())
    sample_fn = jax.jit(run_setup.family.sample, static_argnums=2, out_shardings=repl)
    key = jax.random.key(seed)
    images = np.asarray(sample_fn(state.ema_params, key, num_samples))
    step = int(jax.device_get(state.step))
    tag = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    prefix = os.path.join(
        workdir, "samples", f"step{step}_seed{seed}{'_' + tag if tag else ''}"
    )
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        np.savez(prefix + ".npz", images=images)
        from PIL import Image

        grid = metrics.image_grid(images)
        Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(
            prefix + ".png"
        )
    logging.info(
        "wrote %s.png and .npz (%d samples, step %d)", prefix, num_samples, step
    )
    return prefix


def main(argv: list[str]) -> None:
    if len(argv) > 1 or _WORKDIR.value is None:
        raise app.UsageError(
            "usage: --workdir=DIR [--num_samples --seed --sampler "
            "--steps --guidance --eta]"
        )
    overrides = {
        "sampler": _SAMPLER.value,
        "sample_steps": _STEPS.value,
        "guidance_scale": _GUIDANCE.value,
        "ddim_eta": _ETA.value,
    }
    try:
        run(
            _WORKDIR.value,
            num_samples=_NUM.value,
            seed=_SEED.value,
            diffusion_overrides=overrides,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
