"""The families; `make(config)` builds the one `config.family` names.

The contract every family fills lives in `family.py` (re-exported here).
"""

import ml_collections

from gen_jax.families.family import (
    Batch,
    Family,
    LossFn,
    Metrics,
    Params,
    PyTree,
    check_name,
    role_of,
)

__all__ = [
    "Batch",
    "Family",
    "LossFn",
    "Metrics",
    "Params",
    "PyTree",
    "check_name",
    "make",
    "migrate",
    "prepare",
    "role_of",
    "sampler_flags",
]


def sampler_flags(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{flag: dotted config key} of the sampling flags of `gen-jax sample /
    export / evaluate` that `config`'s family takes (none: {})."""
    from gen_jax.families import diffusion

    if config.family == "diffusion":
        return diffusion.sampler_flags(config.diffusion)
    return {}


def migrate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A run's config.json as today's families read it (each family migrates
    its own section): checkpoint.load_config calls it for every opened run."""
    from gen_jax.families import diffusion

    if config.family == "diffusion":
        diffusion.migrate(config.diffusion)
    return config


def prepare(config: ml_collections.ConfigDict, read_config) -> list[str]:
    """Fills the sections `config` repeats from runs it reads (a text
    encoder's model and tokenizer: text_encoder.prepare), `read_config(workdir)`
    giving such a run's config; returns the dotted keys it changed. train.py
    calls it before building a run, so any fitting run can be named."""
    from gen_jax.families import text_encoder

    try:
        return text_encoder.prepare(config, read_config)
    except FileNotFoundError as e:
        if config.text.model:  # repeated by hand: the step-0 load says more,
            return []  # and a resumed run needs the encoder run no longer
        raise FileNotFoundError(
            f"config.text.encoder={config.text.encoder!r}: {e}; train a language "
            f"model there first (gen-jax train --config=configs/lm_pydoc.py "
            f"--workdir={config.text.encoder}) or name a gen-jax import-hf workdir"
        ) from e


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the family named by `config.family`; with `config.lora.rank` > 0
    it trains LoRA adapters on a frozen base; a diffusion config
    with `config.latent.autoencoder` trains on that VAE's latents."""
    # Explicit imports, no registration side effects.
    from gen_jax.families import classifier, diffusion, gan, latent, lm, vae
    from gen_jax.families import lora as lora_lib

    families = {
        "classifier": classifier.make,
        "diffusion": diffusion.make,
        "gan": gan.make,
        "lm": lm.make,
        "vae": vae.make,
    }
    check_name("config.family", config.family, families)
    # config.json of a run written before base.py declared config.latent has none.
    if config.get("latent", {}).get("autoencoder"):
        if config.family != "diffusion":
            raise ValueError(
                f"config.latent trains a diffusion model on latents; this config "
                f"trains {config.family!r}: leave config.latent.autoencoder empty"
            )
        inner = diffusion.make(latent.latent_config(config), pixels=False)
        family = latent.wrap(config, inner)
    else:
        family = families[config.family](config)
    if "lora" in config and config.lora.rank > 0:
        if config.model.get("scan_layers"):
            raise ValueError(
                "config.lora adapts unrolled layers only; set "
                "config.model.scan_layers=False for a LoRA run"
            )
        return lora_lib.wrap(family, config.lora)
    return family
