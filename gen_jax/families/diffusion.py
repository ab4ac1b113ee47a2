"""Diffusion family: one denoiser trained under `diffusion.objective`, guided samplers.

The objective (ddpm, edm or flow) is a record of diffusion_objectives.py,
picked once here: how it noises images, what the network sees and estimates,
its noise levels, samplers and held-out metrics.

Classifier-free guidance (Ho & Salimans 2022) with one traced weight per image
and an optional guidance interval (Kynkäänniemi et al. 2024), a range of
EDM-equivalent noise levels outside which the conditional model runs alone.
The samplers are in samplers.py.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import samplers, text_encoder
from gen_jax.families.diffusion_objectives import OBJECTIVES, Objective, Process
from gen_jax.families.family import (
    Batch,
    Family,
    Images,
    Metrics,
    Params,
    check_name,
    image_shape,
    images_sampler,
    normal_per_key,
)
from gen_jax.models import MODELS


def migrate(d: ml_collections.ConfigDict) -> None:
    """The section's one migration, in place, for a run's own config.json
    (checkpoint.load_config): a run written before `objective` existed is
    DDPM and the keys added since take their defaults; another objective's
    keys, which this one ignores but a new config may not set, go back to
    their defaults (an edm smoke run that carries DDPM's shortened T)."""
    if "objective" not in d:
        d.objective = "ddpm"
    for other in OBJECTIVES.values():
        for key, default in other.keys.items():
            if key not in d or other.name != d.objective:
                d[key] = default


def sampler_flags(d: ml_collections.ConfigDict) -> dict[str, str]:
    """{sampling flag: the config key it sets} for this objective's runs."""
    flags = {
        "sampler": "diffusion.sampler",
        "sampler_steps": "diffusion.sample_steps",
        "guidance": "diffusion.guidance_scale",
    }
    if "ddim_eta" in OBJECTIVES[d.objective].keys:
        flags["eta"] = "diffusion.ddim_eta"
    return flags


def pick_objective(d: ml_collections.ConfigDict) -> Objective:
    """The record `diffusion.objective` names; fails fast on a sampler or a
    key of `config.diffusion` that it does not read."""
    if "objective" not in d:
        raise ValueError(
            "config.diffusion has no objective: set one, or open a run's "
            "config.json with checkpoint.load_config, which migrates it"
        )
    name = d.objective
    check_name("config.diffusion.objective", name, OBJECTIVES)
    objective = OBJECTIVES[name]
    if d.sampler not in objective.samplers:
        owners = [o.name for o in OBJECTIVES.values() if d.sampler in o.samplers]
        if not owners:
            check_name("config.diffusion.sampler", d.sampler, objective.samplers)
        raise ValueError(
            f"config.diffusion.sampler {d.sampler!r} samples objective "
            f"{owners[0]!r}, not {name!r}; valid for {name!r}: "
            f"{', '.join(objective.samplers)}"
        )
    for other in OBJECTIVES.values():
        for key, default in other.keys.items():
            if other is not objective and d.get(key, default) != default:
                raise ValueError(
                    f"config.diffusion.{key}={d[key]!r} is read only by objective "
                    f"{other.name!r}, not {name!r}: leave it at {default!r} or "
                    f"set config.diffusion.objective={other.name!r}"
                )
    objective.check(d)
    return objective


def guidance_interval(d: ml_collections.ConfigDict) -> jax.Array:
    """[lo, hi] of `diffusion.guidance_interval` (EDM-equivalent sigmas);
    empty or missing: everywhere."""
    interval = tuple(d.get("guidance_interval", ()) or (0.0, math.inf))
    if len(interval) != 2 or not interval[0] < interval[1]:
        raise ValueError(
            f"diffusion.guidance_interval must be () or (lo, hi) with lo < hi, "
            f"got {interval}"
        )
    return jnp.asarray(interval, jnp.float32)


def _num_classes(config: ml_collections.ConfigDict) -> int:
    """The label count the model embeds (plus its null label); 0: unconditional."""
    return config.data.num_classes if config.diffusion.conditional else 0


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The denoiser `config.model` names, shaped for `config.data`'s images
    (and with `config.text.encoder`, reading that encoder's features)."""
    check_name("config.model.name", config.model.name, MODELS)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    kwargs |= text_encoder.denoiser_kwargs(config)
    return MODELS[config.model.name](
        **kwargs, out_channels=config.data.channels, num_classes=_num_classes(config)
    )


def _guided(config, model: nn.Module, process: Process, pixels: bool):
    """(params, keys_N, labels_N, guidance_N, interval=None, prompt=None,
    negative=None) -> images (the family's `generate`), with the objective's
    sampler and its steps fixed by `config.diffusion`, one traced guidance
    weight per image and a traced guidance interval [lo, hi] (EDM-equivalent
    sigmas; default `diffusion.guidance_interval`): changing either does not
    recompile. Labels are ignored when the model is unconditional. A
    text-conditioned model reads `prompt` ({"text_tokens", "text_mask"} [N, S];
    None: the null caption) and guides away from `negative` (None: the null
    caption) as its unconditional branch. `pixels`: samples are images,
    clipped to [-1, 1] (latents are not)."""
    num_classes = _num_classes(config)
    shape = image_shape(config.data)
    default_interval = guidance_interval(config.diffusion)
    text, prompt_of = text_encoder.enabled(config), text_encoder.prompt_fn(config)
    length = config.data.get("caption_len", 0)

    def sample(
        params: Params,
        keys_N,
        labels_N,
        guidance_N,
        interval=None,
        prompt=None,
        negative=None,
    ):
        p = {"params": params["model"]}
        guidance_N111 = jnp.broadcast_to(guidance_N, labels_N.shape)[
            :, None, None, None
        ]
        lo, hi = default_interval if interval is None else jnp.asarray(interval)
        # Both sides at one length (the null caption's: the longest given).
        given = [c["text_tokens"].shape[1] for c in (prompt, negative) if c]
        size = max(given, default=length)
        null = text_encoder.null_caption(labels_N.shape[0], size)
        prompt, negative = (
            null if c is None else text_encoder.padded(c, size)
            for c in (prompt, negative)
        )
        # The text features, computed once per call, not per sampler step.
        cond_text, uncond_text = prompt_of(params, prompt), prompt_of(params, negative)

        def network(x, tau_N):
            x_in, noise_in = process.network_inputs(x, tau_N)
            if not (num_classes or text):
                return model.apply(p, x_in, noise_in)
            # One batched pass for the conditional and the unconditional
            # inputs (null label; negative prompt or null caption).
            labels = None
            if num_classes:
                null_N = jnp.full_like(labels_N, num_classes)
                labels = jnp.concatenate([labels_N, null_N])
            both = model.apply(
                p,
                jnp.concatenate([x_in, x_in]),
                jnp.concatenate([noise_in, noise_in]),
                labels,
                *(jnp.concatenate(pair) for pair in zip(cond_text, uncond_text)),
            )
            cond, uncond = jnp.split(both, 2)
            level = process.noise_level(tau_N[0])
            weight = jnp.where((level > lo) & (level <= hi), guidance_N111, 1.0)
            return uncond + weight * (cond - uncond)

        def denoise(x, tau_N):
            return process.estimates(x, tau_N, network(x, tau_N))

        noise_keys, sampler_keys = samplers.split_per_image(keys_N)
        x_T = process.x_T_scale * normal_per_key(noise_keys, shape)
        x = process.sample(denoise, x_T, sampler_keys)
        return jnp.clip(x, -1, 1) if pixels else x

    return sample


def make(config: ml_collections.ConfigDict, *, pixels: bool = True) -> Family:
    """Builds the diffusion family from `config.model`, `config.diffusion`,
    `config.data`; `pixels=False`: on latent images (families/latent.py),
    which no sampler clips."""
    d = config.diffusion
    objective = pick_objective(d)
    if not pixels and not objective.latents:
        raise ValueError(
            f"latent diffusion needs a continuous objective ({objective.name}'s "
            "samplers clip x0 to the pixel range [-1, 1]): set "
            "config.diffusion.objective to "
            + " or ".join(o.name for o in OBJECTIVES.values() if o.latents)
        )
    model, process = make_model(config), objective.make(d)
    num_classes = _num_classes(config)
    guided_sample = _guided(config, model, process, pixels)
    text, prompt_of = text_encoder.enabled(config), text_encoder.prompt_fn(config)

    def labels_of(batch, key):
        if not num_classes:
            return None
        # Label dropout: the null label trains the unconditional model for guidance.
        drop = jax.random.bernoulli(key, d.label_dropout, batch["label"].shape)
        return jnp.where(drop, num_classes, batch["label"])

    def init(key: jax.Array, batch: Batch) -> Params:
        x = batch["image"][:1]
        label = jnp.zeros((1,), jnp.int32) if num_classes else None
        params = {}
        if text:  # the frozen encoder, filled from its run at step 0
            key, text_key = jax.random.split(key)  # (no split without: same init)
            params[text_encoder.ENTRY] = text_encoder.init(config, text_key)
        t = jnp.zeros((1,), jnp.int32)
        captions = {k: batch[k][:1] for k in ("text_tokens", "text_mask") if text}
        text_args = prompt_of(params, captions)
        params["model"] = model.init(key, x, t, label, *text_args)["params"]
        return params

    def forward(params: Params, batch: Batch, key: jax.Array, train: bool):
        """The denoiser's output for the batch noised at random noise levels,
        with the levels, the target and the noised images."""
        t_key, eps_key, label_key, dropout_key = jax.random.split(key, 4)
        tau_B, x, target = process.noised(batch["image"], t_key, eps_key)
        x_in, noise_in = process.network_inputs(x, tau_B)
        # Labels and captions are dropped with independent draws.
        out = model.apply(
            {"params": params["model"]},
            x_in,
            noise_in,
            labels_of(batch, label_key),
            *prompt_of(params, batch, jax.random.fold_in(label_key, 1)),
            train=train,
            rngs={"dropout": dropout_key},
        )
        return out, tau_B, target, x

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return forward(params, batch, key, train=False)[0]

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        out, tau_B, target, x = forward(params, batch, key, train=True)
        return process.loss(batch["image"], x, tau_B, out, target)

    def evaluate(params: Params, batch: Batch, key: jax.Array) -> Metrics:
        labels = batch["label"] if num_classes else None

        text_args = prompt_of(params, batch)  # no caption dropout

        def network(x, tau_B):
            x_in, noise_in = process.network_inputs(x, tau_B)
            p = {"params": params["model"]}
            return model.apply(p, x_in, noise_in, labels, *text_args)

        return process.evaluate(network, batch["image"], key)

    return Family(
        init=init,
        losses={"model": loss},
        generate=guided_sample,
        sample=images_sampler(guided_sample, num_classes, d.guidance_scale),
        apply=apply,
        evaluate=evaluate if process.evaluate else None,
        images=Images(
            image_shape(config.data),
            num_classes,
            d.guidance_scale,
            sampler={
                "objective": objective.name,
                "sampler": d.sampler,
                "steps": process.sampler_steps,
            },
            prompts=text_encoder.prompts(config) if text else None,
        ),
        frozen=(text_encoder.ENTRY,) if text else (),
        loads=(text_encoder.load(config),) if text else (),
    )
