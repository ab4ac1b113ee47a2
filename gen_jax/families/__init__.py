"""The family contract: a few pure functions built from the config; FAMILIES maps names."""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

PyTree = Any
Params = dict[str, PyTree]  # keyed by role: "model", or "disc" and "gen"
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class Family:
    """What the shared loop needs from a family.

    `losses` maps a phase to its loss; their order is the update order inside
    one step. A phase is named by its role ("disc") or "role/name" ("disc/r1",
    a second update of the same role with its own loss, like StyleGAN2's lazy
    regulariser). A loss gets the whole params dict and is differentiated only
    with respect to its own role. `every` runs a phase only every n steps (a
    GAN's generator after n discriminator steps). Params entries that are not
    roles (no loss) are non-trainable state, e.g. spectral-norm vectors: a loss
    may return their new values in `aux["new_state"]` ({name: tree}), and the
    step stores them.
    """

    init: Callable[[jax.Array, Batch], Params]
    losses: dict[str, LossFn]
    # -> images in [-1, 1]; None for families that do not generate (classifier).
    sample: Callable[[Params, jax.Array, int], jax.Array] | None = None
    # The model's forward pass on a batch, for inspection (notebooks, tests):
    # VAE decoder output for a posterior sample, diffusion denoiser output at
    # random timesteps, LM next-token logits, GAN discriminator scores of the
    # batch, classifier logits. Deterministic (no dropout).
    apply: Callable[[Params, Batch, jax.Array], jax.Array] | None = None
    # Optional: batch -> reconstructed images, for families with an encoder.
    reconstruct: Callable[[Params, Batch, jax.Array], jax.Array] | None = None
    # Optional: held-out metrics ("<role>/<name>") when they differ from the
    # training losses (e.g. a diffusion bound over many timesteps).
    evaluate: Callable[[Params, Batch, jax.Array], Metrics] | None = None
    # Per-example counts the loop turns into rates: {"tokens": L} logs
    # tokens_per_sec; {"flops": F} logs model FLOP/s and MFU.
    per_example: dict[str, float] = dataclasses.field(default_factory=dict)
    # Phase -> update interval in steps (default 1: every step).
    every: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        """The roles with an optimizer, in update order."""
        return list(dict.fromkeys(role_of(phase) for phase in self.losses))


def role_of(phase: str) -> str:
    """The role a phase updates: "disc/r1" -> "disc"."""
    return phase.split("/")[0]


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
    if config.family not in families:
        raise ValueError(
            f"unknown config.family {config.family!r}; valid: {sorted(families)}"
        )
    return families[config.family](config)
