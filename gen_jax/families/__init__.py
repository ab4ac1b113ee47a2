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
    "role_of",
]


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the family named by `config.family`."""
    # Explicit imports, no registration side effects.
    from gen_jax.families import classifier, diffusion, gan, lm, vae

    families = {
        "classifier": classifier.make,
        "diffusion": diffusion.make,
        "gan": gan.make,
        "lm": lm.make,
        "vae": vae.make,
    }
    check_name("config.family", config.family, families)
    return families[config.family](config)
