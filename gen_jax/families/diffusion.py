"""Diffusion family: one denoiser trained under `diffusion.objective`, guided samplers.

- ddpm (Ho et al. 2020): eps / x0 / v targets, the simple loss or the VLB,
  bits/dim held out; the process math is in gaussian_diffusion.py;
- edm (Karras et al. 2022) and flow (rectified flow / flow matching): the
  continuous objectives of objectives.py.

Classifier-free guidance (Ho & Salimans 2022) with one traced weight per image
and an optional guidance interval (Kynkäänniemi et al. 2024), a range of
EDM-equivalent noise levels outside which the conditional model runs alone.
The samplers are in samplers.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import gaussian_diffusion as gd
from gen_jax.families import objectives as obj
from gen_jax.families import samplers
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

# Each objective's samplers (`diffusion.sampler`, `gen-jax sample --sampler`).
SAMPLERS = {
    "ddpm": ("ddpm", "ddim", "dpm_solver_pp_2m"),
    "edm": ("euler", "heun", "dpm_solver_pp_2m"),
    "flow": ("euler", "heun", "midpoint", "dpm_solver_pp_2m"),
}
LOSSES = ("simple", "vlb")
_NAMES = {  # config.diffusion field -> its valid values
    "schedule": gd.SCHEDULES,
    "prediction": gd.PREDICTIONS,
    "variance": gd.VARIANCES,
    "loss": LOSSES,
}


def objective_of(d: ml_collections.ConfigDict) -> str:
    """`diffusion.objective`; "ddpm" for runs configured before it existed."""
    return d.get("objective", "ddpm")


def _check(d: ml_collections.ConfigDict) -> None:
    objective = objective_of(d)
    check_name("config.diffusion.objective", objective, obj.OBJECTIVES)
    for field, valid in _NAMES.items():
        check_name(f"config.diffusion.{field}", d[field], valid)
    if d.sampler not in SAMPLERS[objective]:
        owners = [o for o, names in SAMPLERS.items() if d.sampler in names]
        if not owners:
            check_name("config.diffusion.sampler", d.sampler, SAMPLERS[objective])
        raise ValueError(
            f"config.diffusion.sampler {d.sampler!r} samples objective "
            f"{owners[0]!r}, not {objective!r}; valid for {objective!r}: "
            f"{', '.join(SAMPLERS[objective])}"
        )
    if objective == "ddpm":
        return
    if d.loss != "simple":
        raise ValueError(
            f"diffusion.loss={d.loss!r} is DDPM's bound; objective {objective!r} "
            "trains its own weighted loss: set diffusion.loss='simple'"
        )
    if objective == "flow":
        check_name("config.diffusion.timesteps", d.timesteps, obj.TIMESTEPS)
    if d.get("churn", 0.0) and not (
        objective == "edm" and d.sampler in ("euler", "heun")
    ):
        raise ValueError(
            "diffusion.churn adds noise on EDM's sigma grid: it needs objective "
            f"'edm' with sampler euler or heun, not {objective!r} with {d.sampler!r}"
        )


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


def _model_and_schedule(config: ml_collections.ConfigDict):
    d = config.diffusion
    _check(d)
    check_name("config.model.name", config.model.name, MODELS)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    model = MODELS[config.model.name](
        **kwargs, out_channels=config.data.channels, num_classes=_num_classes(config)
    )
    schedule = gd.make_schedule(d.schedule, d.num_timesteps, d.beta_start, d.beta_end)
    return model, schedule


def _network_inputs(d, objective: str, x, tau_B):
    """(image, noise input) the network sees at tau: DDPM's x_t and integer t;
    EDM's c_in x and c_noise; flow's x_t and t (both continuous inputs scaled
    by objectives.TIME_SCALE)."""
    if objective == "ddpm":
        return x, tau_B
    if objective == "edm":
        _, _, c_in, c_noise = obj.edm_precondition(tau_B, d.sigma_data)
        return c_in[:, None, None, None] * x, obj.TIME_SCALE * c_noise
    return x, obj.TIME_SCALE * tau_B


def _estimates(d, objective: str, x, tau_B, out):
    """(x0_hat, dx/dtau) of a continuous objective's network output."""
    tau = tau_B[:, None, None, None]
    if objective == "edm":
        x0 = obj.edm_denoised(x, tau, out, d.sigma_data)
        return x0, (x - x0) / tau
    return obj.flow_denoised(x, tau, out), out  # flow: out is the velocity


def _noise_level(s: gd.Schedule, objective: str, tau):
    """EDM-equivalent sigma = sigma / alpha at tau (the guidance interval's unit)."""
    if objective == "ddpm":
        abar = s.alphas_cumprod[tau]
        return jnp.sqrt((1 - abar) / abar)
    return obj.noise_level(objective, tau)


def _continuous_run(d, objective: str):
    """(tau grid, x_T scale, sampler(denoise, x_T, keys)) of a continuous objective."""
    steps = d.sample_steps
    if objective == "edm":
        taus = obj.karras_sigmas(steps, d.sigma_min, d.sigma_max, d.rho)
    else:
        taus = obj.flow_times(steps)
    if d.sampler == "dpm_solver_pp_2m":
        run = functools.partial(
            samplers.dpm_solver_pp_2m_continuous,
            taus=taus,
            alpha_sigma=functools.partial(obj.alpha_sigma, objective),
        )
    else:
        run = functools.partial(
            samplers.ode,
            taus=taus,
            method=d.sampler,
            churn=d.get("churn", 0.0),
            churn_range=(d.get("churn_min", 0.0), d.get("churn_max", math.inf)),
            churn_noise=d.get("churn_noise", 1.0),
        )
    return taus, run


def make_guided_sampler(config: ml_collections.ConfigDict, pixels: bool = True):
    """(params, keys_N, labels_N, guidance_N, interval=None) -> images (the
    family's `generate`), with the objective's sampler and its steps fixed by
    `config.diffusion`, one traced guidance weight per image and a traced
    guidance interval [lo, hi] (EDM-equivalent sigmas; default
    `diffusion.guidance_interval`): changing either does not recompile.
    Labels are ignored when the model is unconditional. `pixels`: samples
    are images, clipped to [-1, 1] (latents are not)."""
    model, s = _model_and_schedule(config)
    d = config.diffusion
    objective = objective_of(d)
    num_classes = _num_classes(config)
    shape = (config.data.image_size, config.data.image_size, config.data.channels)
    default_interval = guidance_interval(d)
    if objective == "ddpm":
        run = {
            "ddpm": functools.partial(samplers.ddpm, variance=d.variance),
            "ddim": functools.partial(
                samplers.ddim, steps=d.sample_steps, eta=d.ddim_eta
            ),
            "dpm_solver_pp_2m": functools.partial(
                samplers.dpm_solver_pp_2m, steps=d.sample_steps
            ),
        }[d.sampler]
        x_T_scale = 1.0
    else:
        taus, continuous = _continuous_run(d, objective)
        x_T_scale = float(taus[0]) if objective == "edm" else 1.0

        def run(_, denoise, x_T, keys):
            x = continuous(denoise, x_T, keys)
            return jnp.clip(x, -1, 1) if pixels else x

    def sample(params: Params, keys_N, labels_N, guidance_N, interval=None):
        p = {"params": params["model"]}
        guidance_N111 = jnp.broadcast_to(guidance_N, labels_N.shape)[
            :, None, None, None
        ]
        lo, hi = default_interval if interval is None else jnp.asarray(interval)

        def network(x, tau_N):
            x_in, noise_in = _network_inputs(d, objective, x, tau_N)
            if not num_classes:
                return model.apply(p, x_in, noise_in)
            # One batched pass for the conditional and the null label.
            null_N = jnp.full_like(labels_N, num_classes)
            both = model.apply(
                p,
                jnp.concatenate([x_in, x_in]),
                jnp.concatenate([noise_in, noise_in]),
                jnp.concatenate([labels_N, null_N]),
            )
            cond, uncond = jnp.split(both, 2)
            level = _noise_level(s, objective, tau_N[0])
            weight = jnp.where((level > lo) & (level <= hi), guidance_N111, 1.0)
            return uncond + weight * (cond - uncond)

        def denoise(x, tau_N):
            out = network(x, tau_N)
            if objective == "ddpm":
                return gd.to_x0_eps(s, d.prediction, x, tau_N, out)
            return _estimates(d, objective, x, tau_N, out)

        noise_keys, sampler_keys = samplers.split_per_image(keys_N)
        x_T = x_T_scale * normal_per_key(noise_keys, shape)
        return run(s, denoise, x_T, sampler_keys)

    return sample


def _continuous_noised(d, objective: str, x0, key):
    """(tau_B, x, target) at training noise levels: EDM's ln sigma ~
    N(P_mean, P_std^2) with F's target (x0 - c_skip x) / c_out, or flow's t
    (uniform or logit-normal) with the velocity eps - x0."""
    tau_key, eps_key = jax.random.split(key)
    eps = jax.random.normal(eps_key, x0.shape)
    n = x0.shape[0]
    if objective == "edm":
        tau_B = obj.edm_training_sigmas(tau_key, n, d.p_mean, d.p_std)
        tau = tau_B[:, None, None, None]
        x = x0 + tau * eps
        return tau_B, x, obj.edm_target(x0, x, tau, d.sigma_data)
    tau_B = obj.flow_timesteps(tau_key, n, d.timesteps, d.t_mean, d.t_std)
    x = obj.flow_interpolate(x0, eps, tau_B[:, None, None, None])
    return tau_B, x, obj.flow_target(x0, eps)


def make(config: ml_collections.ConfigDict, *, pixels: bool = True) -> Family:
    """Builds the diffusion family from `config.model`, `config.diffusion`,
    `config.data`; `pixels=False`: on latent images (families/latent.py),
    which no sampler clips."""
    model, s = _model_and_schedule(config)
    d = config.diffusion
    objective = objective_of(d)
    if not pixels and objective == "ddpm":
        raise ValueError(
            "latent diffusion needs a continuous objective (DDPM's samplers clip "
            "x0 to the pixel range [-1, 1]): set config.diffusion.objective to "
            "edm or flow"
        )
    num_classes = _num_classes(config)
    guided_sample = make_guided_sampler(config, pixels)

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
        """The denoiser's output for the batch noised at random noise levels,
        with the levels, the noise (DDPM) or the target (EDM, flow) and the
        noised images."""
        x0 = batch["image"]
        t_key, eps_key, label_key, dropout_key = jax.random.split(key, 4)
        if objective == "ddpm":
            tau_B = jax.random.randint(t_key, (x0.shape[0],), 0, d.num_timesteps)
            noise_or_target = jax.random.normal(eps_key, x0.shape)
            x = gd.q_sample(s, x0, tau_B, noise_or_target)
        else:
            tau_B, x, noise_or_target = _continuous_noised(d, objective, x0, t_key)
        x_in, noise_in = _network_inputs(d, objective, x, tau_B)
        out = model.apply(
            {"params": params["model"]},
            x_in,
            noise_in,
            labels_of(batch, label_key),
            train=train,
            rngs={"dropout": dropout_key},
        )
        return out, tau_B, noise_or_target, x

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return forward(params, batch, key, train=False)[0]

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        x0 = batch["image"]
        out, t_B, noise_or_target, x_t = forward(params, batch, key, train=True)
        if objective != "ddpm":  # EDM: lambda(sigma) |D - x0|^2 = |F - target|^2
            mse = jnp.mean((out - noise_or_target) ** 2)
            return mse, {"mse": mse}
        eps = noise_or_target
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
        # The continuous objectives have no discrete bound: held out, their
        # training loss.
        evaluate=evaluate if objective == "ddpm" else None,
        images=Images(
            image_shape(config.data),
            num_classes,
            d.guidance_scale,
            sampler={
                "objective": objective,
                "sampler": d.sampler,
                "steps": d.sample_steps if d.sampler != "ddpm" else d.num_timesteps,
                "guidance": d.guidance_scale,
            },
        ),
    )
