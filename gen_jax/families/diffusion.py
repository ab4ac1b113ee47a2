"""Diffusion family: DDPM training (simple loss or VLB), guided samplers, bits/dim.

Ho et al. 2020 (DDPM); classifier-free guidance from Ho & Salimans 2022. The
process math is in gaussian_diffusion.py, the samplers in samplers.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import gaussian_diffusion as gd
from gen_jax.families import samplers
from gen_jax.families.family import (
    Batch,
    Family,
    Metrics,
    Params,
    check_name,
    images_sampler,
    normal_per_key,
)
from gen_jax.models import MODELS

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp_2m")
LOSSES = ("simple", "vlb")
_NAMES = {  # config.diffusion field -> its valid values
    "schedule": gd.SCHEDULES,
    "prediction": gd.PREDICTIONS,
    "variance": gd.VARIANCES,
    "loss": LOSSES,
    "sampler": SAMPLERS,
}


def _num_classes(config: ml_collections.ConfigDict) -> int:
    """The label count the model embeds (plus its null label); 0: unconditional."""
    return config.data.num_classes if config.diffusion.conditional else 0


def _model_and_schedule(config: ml_collections.ConfigDict):
    d = config.diffusion
    for field, valid in _NAMES.items():
        check_name(f"config.diffusion.{field}", d[field], valid)
    check_name("config.model.name", config.model.name, MODELS)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    model = MODELS[config.model.name](
        **kwargs, out_channels=config.data.channels, num_classes=_num_classes(config)
    )
    schedule = gd.make_schedule(d.schedule, d.num_timesteps, d.beta_start, d.beta_end)
    return model, schedule


def make_guided_sampler(config: ml_collections.ConfigDict):
    """(params, keys_N, labels_N, guidance_N) -> images in [-1, 1] (the family's
    `generate`), with the sampler, its steps and eta fixed by `config.diffusion`
    and one traced guidance weight per image (changing them does not
    recompile). Labels are ignored when the model is unconditional."""
    model, s = _model_and_schedule(config)
    d = config.diffusion
    num_classes = _num_classes(config)
    shape = (config.data.image_size, config.data.image_size, config.data.channels)
    run = {
        "ddpm": functools.partial(samplers.ddpm, variance=d.variance),
        "ddim": functools.partial(samplers.ddim, steps=d.sample_steps, eta=d.ddim_eta),
        "dpm_solver_pp_2m": functools.partial(
            samplers.dpm_solver_pp_2m, steps=d.sample_steps
        ),
    }[d.sampler]

    def sample(params: Params, keys_N, labels_N, guidance_N):
        p = {"params": params["model"]}
        guidance_N111 = jnp.broadcast_to(guidance_N, labels_N.shape)[
            :, None, None, None
        ]

        def denoise(x_t, t_N):
            if not num_classes:
                out = model.apply(p, x_t, t_N)
            else:  # one batched pass for the conditional and the null label
                null_N = jnp.full_like(labels_N, num_classes)
                both = model.apply(
                    p,
                    jnp.concatenate([x_t, x_t]),
                    jnp.concatenate([t_N, t_N]),
                    jnp.concatenate([labels_N, null_N]),
                )
                cond, uncond = jnp.split(both, 2)
                out = uncond + guidance_N111 * (cond - uncond)
            return gd.to_x0_eps(s, d.prediction, x_t, t_N, out)

        noise_keys, sampler_keys = samplers.split_per_image(keys_N)
        return run(s, denoise, normal_per_key(noise_keys, shape), sampler_keys)

    return sample


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the diffusion family from `config.model`, `config.diffusion`, `config.data`."""
    model, s = _model_and_schedule(config)
    d = config.diffusion
    num_classes = _num_classes(config)
    guided_sample = make_guided_sampler(config)

    def labels_of(batch, key):
        if not num_classes:
            return None
        # Label dropout: the null label trains the unconditional model for guidance.
        drop = jax.random.bernoulli(key, d.label_dropout, batch["label"].shape)
        return jnp.where(drop, num_classes, batch["label"])

    def init(key: jax.Array, batch: Batch) -> Params:
        x = batch["image"][:1]
        label = jnp.zeros((1,), jnp.int32) if num_classes else None
        return {
            "model": model.init(key, x, jnp.zeros((1,), jnp.int32), label)["params"]
        }

    def forward(params: Params, batch: Batch, key: jax.Array, train: bool):
        """The denoiser's output for the batch noised at random timesteps, with
        the timesteps, the noise and the noised images."""
        x0 = batch["image"]
        t_key, eps_key, label_key, dropout_key = jax.random.split(key, 4)
        t_B = jax.random.randint(t_key, (x0.shape[0],), 0, d.num_timesteps)
        eps = jax.random.normal(eps_key, x0.shape)
        x_t = gd.q_sample(s, x0, t_B, eps)
        out = model.apply(
            {"params": params["model"]},
            x_t,
            t_B,
            labels_of(batch, label_key),
            train=train,
            rngs={"dropout": dropout_key},
        )
        return out, t_B, eps, x_t

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return forward(params, batch, key, train=False)[0]

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        x0 = batch["image"]
        out, t_B, eps, x_t = forward(params, batch, key, train=True)
        mse = jnp.mean((out - gd.target(s, d.prediction, x0, t_B, eps)) ** 2)
        if d.loss == "simple":
            return mse, {"mse": mse}
        # "vlb" (names are checked at make time): a one-sample estimate of the
        # bound, T * L_t + L_T, in nats per dim.
        x0_pred, _ = gd.to_x0_eps(s, d.prediction, x_t, t_B, out)
        vlb = d.num_timesteps * gd.vlb_term(s, d.variance, x0, x_t, t_B, x0_pred)
        dims = math.prod(x0.shape[1:])
        return jnp.mean(vlb + gd.prior_kl(s, x0)) / dims, {"mse": mse}

    def evaluate(params: Params, batch: Batch, key: jax.Array) -> Metrics:
        """Held-out -VLB in nats/image and bits/dim (as DDPM reports it), from
        `eval_timesteps` stratified timesteps per image, and the simple loss."""
        x0 = batch["image"]
        k = d.eval_timesteps
        if d.num_timesteps % k:
            raise ValueError(
                f"diffusion.eval_timesteps={k} must divide "
                f"num_timesteps={d.num_timesteps}"
            )
        p = {"params": params["model"]}
        labels = batch["label"] if num_classes else None

        def term(i):
            t_key, eps_key = jax.random.split(jax.random.fold_in(key, i))
            # Stratum i covers timesteps [i T/k, (i+1) T/k): unbiased for the sum.
            t_B = i * (d.num_timesteps // k) + jax.random.randint(
                t_key, (x0.shape[0],), 0, d.num_timesteps // k
            )
            eps = jax.random.normal(eps_key, x0.shape)
            x_t = gd.q_sample(s, x0, t_B, eps)
            out = model.apply(p, x_t, t_B, labels)
            x0_pred, _ = gd.to_x0_eps(s, d.prediction, x_t, t_B, out)
            mse = jnp.mean((out - gd.target(s, d.prediction, x0, t_B, eps)) ** 2)
            return gd.vlb_term(s, d.variance, x0, x_t, t_B, x0_pred), mse

        terms_KB, mse_K = jax.lax.map(term, jnp.arange(k))
        nelbo_B = d.num_timesteps / k * jnp.sum(terms_KB, 0) + gd.prior_kl(s, x0)
        dims = math.prod(x0.shape[1:])
        return {
            "model/loss": jnp.mean(mse_K),
            "model/nelbo": jnp.mean(nelbo_B),
            "model/bits_per_dim": jnp.mean(nelbo_B) / (dims * math.log(2)),
        }

    return Family(
        init=init,
        losses={"model": loss},
        generate=guided_sample,
        sample=images_sampler(guided_sample, num_classes, d.guidance_scale),
        apply=apply,
        evaluate=evaluate,
    )
