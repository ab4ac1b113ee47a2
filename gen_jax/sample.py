"""Samples from a workdir's newest checkpoint (EMA params).

Images (a PNG grid and an .npz), or for the LM, completions of a prompt (printed
and written to a .txt):

  python -m gen_jax.sample --workdir=runs/ddpm_digits --num_samples=64 \
    --sampler=ddim --steps=50 --guidance=2.0 --seed=0
  python -m gen_jax.sample --workdir=runs/lm_pydoc --prompt="The with statement" \
    --num_samples=2 --max_len=300 --temperature=0.8 --top_k=40 --top_p=0.95
"""

import json
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

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
_PROMPT = flags.DEFINE_string("prompt", "\n", "LM: the text to complete.")
_MAX_LEN = flags.DEFINE_integer("max_len", 256, "LM: prompt + completion tokens.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "LM: 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "LM: keep the k likeliest tokens (0: off).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "LM: nucleus mass (1: off).")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to its workdir."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def run(
    workdir: str,
    *,
    num_samples: int,
    seed: int = 0,
    diffusion_overrides: dict | None = None,
) -> str:
    """Samples `num_samples` images; returns the path prefix of the files written."""
    from gen_jax import metrics, train

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
    state, step = restore(workdir, run_setup)
    repl = jax.sharding.NamedSharding(run_setup.mesh, jax.sharding.PartitionSpec())
    sample_fn = jax.jit(run_setup.family.sample, static_argnums=2, out_shardings=repl)
    key = jax.random.key(seed)
    images = np.asarray(sample_fn(state.ema_params, key, num_samples))
    tag = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    samples = epath.Path(workdir) / "samples"
    prefix = str(samples / f"step{step}_seed{seed}{'_' + tag if tag else ''}")
    if jax.process_index() == 0:
        samples.mkdir(parents=True, exist_ok=True)
        with epath.Path(prefix + ".npz").open("wb") as f:
            np.savez(f, images=images)
        from PIL import Image

        grid = metrics.image_grid(images)
        pil = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
        with epath.Path(prefix + ".png").open("wb") as f:
            pil.save(f, format="PNG")
    logging.info(
        "wrote %s.png and .npz (%d samples, step %d)", prefix, num_samples, step
    )
    return prefix


def complete(
    workdir: str,
    prompt: str,
    *,
    num_samples: int,
    seed: int = 0,
    max_len: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> list[str]:
    """LM completions of `prompt`, one per seed (seed, seed + 1, ...); also
    written to WORKDIR/samples/completions_step<N>_seed<S>.txt."""
    from gen_jax import train
    from gen_jax.families import lm

    config = load_config(workdir)
    if config.family != "lm":
        raise ValueError(
            f"--prompt completes LM runs; {workdir!r} trains {config.family!r}"
        )
    state, step = restore(workdir, train.setup(config))
    model, tokenizer = lm.make_model(config)
    ids = tokenizer.encode(prompt)
    if not 0 < len(ids) < max_len:
        raise ValueError(
            f"the prompt has {len(ids)} tokens; --max_len={max_len} "
            "must be larger (and the prompt non-empty)"
        )
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    prompt_BP = np.broadcast_to(ids, (num_samples, len(ids)))
    seeds = np.arange(seed, seed + num_samples, dtype=np.int32)
    tokens = generate(
        state.ema_params, prompt_BP, seeds, max_len, temperature, top_k, top_p
    )
    texts = [tokenizer.decode(row) for row in np.asarray(tokens)]
    if jax.process_index() == 0:
        path = (
            epath.Path(workdir) / "samples" / f"completions_step{step}_seed{seed}.txt"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n=====\n\n".join(texts))
    return texts


def restore(workdir, run_setup):
    """The newest restorable state of `workdir` and its step."""
    from gen_jax import checkpoint

    manager = checkpoint.make_manager(workdir, 1)
    state = checkpoint.restore_latest(manager, run_setup.abstract_state, None)
    manager.close()
    if state is None:
        raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    return state, int(jax.device_get(state.step))


def main(argv: list[str]) -> None:
    if len(argv) > 1 or _WORKDIR.value is None:
        raise app.UsageError(
            "usage: --workdir=DIR [--num_samples --seed]; diffusion: [--sampler "
            "--steps --guidance --eta]; LM: [--prompt --max_len --temperature "
            "--top_k --top_p]"
        )
    overrides = {
        "sampler": _SAMPLER.value,
        "sample_steps": _STEPS.value,
        "guidance_scale": _GUIDANCE.value,
        "ddim_eta": _ETA.value,
    }
    try:
        if load_config(_WORKDIR.value).family == "lm":
            texts = complete(
                _WORKDIR.value,
                _PROMPT.value,
                num_samples=_NUM.value,
                seed=_SEED.value,
                max_len=_MAX_LEN.value,
                temperature=_TEMPERATURE.value,
                top_k=_TOP_K.value,
                top_p=_TOP_P.value,
            )
            print("\n\n=====\n\n".join(texts))
        else:
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
