"""The family contract: the `Family` dataclass of a few pure functions, and its types."""

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
Params = dict[str, PyTree]  # keyed by role: "model", or "disc" and "gen"
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class Prompts:
    """What a text-to-image family reads: captions of `length` token ids from
    `tokenizer` (text.fixed_length), for its exporter, server and tools."""

    length: int
    tokenizer: Any  # text.Tokenizer


@dataclasses.dataclass(frozen=True)
class Images:
    """What an image family declares for its exporter and server."""

    shape: tuple[int, int, int]  # [H, W, C] of a sample, in pixels
    num_classes: int = 0  # labels a sample may be conditioned on (0: none)
    # The classifier-free guidance weight samples use by default; None: the
    # family takes no guidance weight (a request that sets one is refused).
    guidance: float | None = None
    # The sampler's settings an export records beside `guidance` (diffusion:
    # objective, sampler, steps), fixed when it is exported.
    sampler: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Text-to-image: `generate` takes prompt=/negative= captions; None: no text.
    prompts: Prompts | None = None


@dataclasses.dataclass(frozen=True)
class Text:
    """What a language-model family declares for completion, export and serving."""

    model: Any  # the flax module (models/transformer.py's Transformer)
    tokenizer: Any  # text.Tokenizer: encode, decode, prompt, eos_id


@dataclasses.dataclass(frozen=True)
class Load:
    """A params entry filled at step 0 from another run's checkpoint, frozen
    from then on and carried by this run's checkpoints (latent diffusion's
    autoencoder): train.py reads it, so sampling, export and serving need only
    this run."""

    entry: str  # the params entry it fills ({"model": ...} from the other run)
    path: str  # the other run's workdir
    source: str  # the config key that names `path`, for errors
    hint: str  # how to make that run, for errors
    # (the other run's EMA {"model": params}, this run's first `batches`
    # training batches) -> (the entry, {dotted config key: value} to record in
    # config.json).
    finish: Callable[[PyTree, list[Batch]], tuple[PyTree, dict[str, Any]]]
    batches: int = 0


@dataclasses.dataclass(frozen=True)
class Family:
    """What the shared loop needs from a family.

    A phase is named by its role ("disc") or "role/name" ("disc/r1", a second
    update of the same role with its own loss, like StyleGAN2's lazy
    regulariser). A loss gets the whole params dict and is differentiated only
    with respect to its own role. Params entries that are not roles (no loss)
    are non-trainable state, e.g. spectral-norm vectors: a loss may return
    their new values in `aux["new_state"]` ({name: tree}), and the step stores
    them.
    """

    # (key, batch) -> {role: params}: build.setup's state init (under
    # eval_shape, then jit), bench.py, the quick-start notebook.
    init: Callable[[jax.Array, Batch], Params]
    # Phase -> loss, in update order: step.train_step runs one update per
    # phase; step.eval_step averages them when `evaluate` is None.
    losses: dict[str, LossFn]
    # (params, key, n) -> n images in [-1, 1] (LM: token rows): the samples and
    # quality evaluators, `gen-jax sample`, bench.py. None for the classifier.
    sample: Callable[[Params, jax.Array, int], jax.Array] | None = None
    # (params, keys_N, labels_N, guidance_N) -> N images in [-1, 1], one key,
    # label and guidance weight per image (labels and guidance ignored where
    # the model does not use them; text-to-image also takes prompt= and
    # negative=, `Images.prompts`), so an image does not depend on what it is
    # batched with: `sample` is built on it (`images_sampler`), and so are the
    # exported sampler (deploy/export.py) and the server's micro-batches.
    generate: Callable[..., jax.Array] | None = None
    # The model's deterministic forward pass on a batch, for inspection (the
    # quick-start notebook): VAE decoder output for a posterior sample,
    # denoiser output at random timesteps, LM next-token logits, GAN
    # discriminator scores, classifier logits.
    apply: Callable[[Params, Batch, jax.Array], jax.Array] | None = None
    # Batch -> reconstructed images, for families with an encoder: the samples
    # evaluator's reconstruction grid.
    reconstruct: Callable[[Params, Batch, jax.Array], jax.Array] | None = None
    # Held-out metrics ("<role>/<name>") when they differ from the training
    # losses (a diffusion bound over many timesteps): step.eval_step, so the
    # heldout evaluator.
    evaluate: Callable[[Params, Batch, jax.Array], Metrics] | None = None
    # Per-example counts train.py and bench.py turn into rates: {"tokens": L}
    # logs tokens_per_sec; {"flops": F} logs model FLOP/s and MFU.
    per_example: dict[str, float] = dataclasses.field(default_factory=dict)
    # Phase -> update interval in steps (default 1): step.train_step skips a
    # phase between its steps (a GAN's generator after n discriminator steps)
    # and reports `<phase>/updates`, which train.py's log window weighs by.
    every: dict[str, int] = dataclasses.field(default_factory=dict)
    # Params entries that no optimizer updates and the EMA does not copy
    # (LoRA's frozen base, families/lora.py): TrainState.create, so the EMA
    # and optimizer state hold only what trains.
    frozen: tuple[str, ...] = ()
    # What it makes, for the tools, exporter, server and evaluators, which ask
    # this and never the family's name: images (with `generate`) or text.
    # Neither: a classifier, whose `apply` gives logits.
    images: Images | None = None
    text: Text | None = None
    # Entries other runs fill at step 0 (train.py).
    loads: tuple[Load, ...] = ()
    # The params entry `train.init_from` fills ("": the whole model and its
    # EMA; LoRA: its frozen base, the adapters keeping their zero delta).
    init_from: str = ""
    # params -> (family, params) that sampling, evaluation tools, export and
    # serving use for a trained run (LoRA folds its adapters into the base and
    # answers as the plain family); None: the family itself.
    deployed: Callable[[Params], tuple["Family", Params]] | None = None

    @property
    def roles(self) -> list[str]:
        """The roles with an optimizer, in update order."""
        return list(dict.fromkeys(role_of(phase) for phase in self.losses))


def heldout_metrics(
    family: Family, params: Params, batch: Batch, key: jax.Array
) -> Metrics:
    """The family's own held-out metrics, else every phase's loss and metrics
    on the batch (no updates): step.eval_step, and LoRA's merged evaluation."""
    if family.evaluate is not None:
        return family.evaluate(params, batch, key)
    metrics = {}
    for phase, loss_fn in family.losses.items():
        key, subkey = jax.random.split(key)
        loss, aux = loss_fn(params, batch, subkey)
        metrics[f"{phase}/loss"] = loss
        metrics |= {f"{phase}/{k}": v for k, v in aux.items() if k != "new_state"}
    return metrics


def image_keys(key: jax.Array, num: int) -> jax.Array:
    """One key per image: image i of a sample seeded with `key` uses
    fold_in(key, i), whatever else it is generated with."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num))


def seeded_keys(seeds_N: jax.Array, indices_N: jax.Array) -> jax.Array:
    """fold_in(key(seeds[i]), indices[i]) per row: the keys `image_keys` gives
    for one seed, built from plain integers (an export's or a server's
    inputs; an LM folds in the token position)."""
    return jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(
        seeds_N, indices_N
    )


def images_sampler(generate: Callable[..., jax.Array], num_classes: int, guidance=1.0):
    """`Family.sample` from `Family.generate`: every class in turn, one guidance."""

    def sample(params: Params, key: jax.Array, num: int) -> jax.Array:
        labels_N = jnp.arange(num) % max(num_classes, 1)
        guidance_N = jnp.full((num,), guidance, jnp.float32)
        return generate(params, image_keys(key, num), labels_N, guidance_N)

    return sample


def image_shape(data_config) -> tuple[int, int, int]:
    """[H, W, C] of `config.data`'s images."""
    return (data_config.image_size, data_config.image_size, data_config.channels)


def normal_per_key(keys_N: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """[N, *shape] standard normals, row i drawn from keys_N[i] alone."""
    return jax.vmap(lambda k: jax.random.normal(k, shape))(keys_N)


def role_of(phase: str) -> str:
    """The role a phase updates: "disc/r1" -> "disc"."""
    return phase.split("/")[0]


def check_name(key: str, value: str, valid: Collection[str]) -> None:
    """Fails fast, at make() time, on a config name outside `valid`."""
    if value not in valid:
        choices = ", ".join(sorted(valid))
        raise ValueError(f"unknown {key} {value!r}; valid: {choices}")
