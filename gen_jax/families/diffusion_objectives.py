"""The diffusion objectives as records, one each for ddpm, edm and flow, that
diffusion.py picks once by `config.diffusion.objective`.

A record declares the `config.diffusion` keys only it reads, with their
defaults, and its samplers; its `make` binds its math (gaussian_diffusion.py for
DDPM, objectives.py for EDM and flow) to the config as a `Process`. tau is an
objective's noise coordinate: DDPM's integer timestep t, EDM's sigma, flow's t.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import gaussian_diffusion as gd
from gen_jax.families import objectives as obj
from gen_jax.families import samplers
from gen_jax.families.family import Metrics, check_name

LOSSES = ("simple", "vlb")  # DDPM's: L_simple, or the bound itself


@dataclasses.dataclass(frozen=True)
class Process:
    """An objective's math bound to `config.diffusion`."""

    # (x0, t_key, eps_key) -> (tau_B, x, target): training noise levels, the
    # noised images and what the network is trained toward (EDM and flow
    # draw both levels and noise from t_key).
    noised: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    # (x, tau_B) -> (image, noise input) that the network sees.
    network_inputs: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    # (x, tau_B, network output) -> (x0_hat, eps_hat) for DDPM's samplers,
    # (x0_hat, dx/dtau) for the continuous ones.
    estimates: Callable[..., tuple[jax.Array, jax.Array]]
    # tau -> the EDM-equivalent noise level sigma / alpha (the guidance
    # interval's unit).
    noise_level: Callable[[jax.Array], jax.Array]
    # (denoise, x_T, keys_B) -> x_0: `diffusion.sampler` on the objective's grid.
    sample: Callable[..., jax.Array]
    x_T_scale: float  # the std of x at the grid's start
    sampler_steps: int  # steps the sampler takes (DDPM's ancestral sampler: T)
    # (x0, x, tau_B, network output, target) -> (loss, metrics)
    loss: Callable[..., tuple[jax.Array, Metrics]]
    # (network(x, tau_B) -> output, x0, key) -> held-out metrics; None: the
    # training loss is the held-out metric.
    evaluate: Callable[..., Metrics] | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: its name, the keys it owns and its samplers."""

    name: str
    # The config.diffusion keys only this objective reads -> their defaults
    # (configs/base.py's), which every other objective requires.
    keys: dict[str, Any]
    samplers: tuple[str, ...]  # valid `diffusion.sampler` values
    latents: bool  # its samplers run on unbounded latents (families/latent.py)
    check: Callable[[ml_collections.ConfigDict], None]  # its own combinations
    make: Callable[[ml_collections.ConfigDict], Process]


def _mse(x0, x, tau_B, out, target) -> tuple[jax.Array, Metrics]:
    # EDM: lambda(sigma) |D - x0|^2 = |F - target|^2, the weight folded into F.
    mse = jnp.mean((out - target) ** 2)
    return mse, {"mse": mse}


def _ddpm_check(d: ml_collections.ConfigDict) -> None:
    names = {
        "schedule": gd.SCHEDULES,
        "prediction": gd.PREDICTIONS,
        "variance": gd.VARIANCES,
        "loss": LOSSES,
    }
    for key, valid in names.items():
        check_name(f"config.diffusion.{key}", d[key], valid)


def _ddpm_heldout(d, s: gd.Schedule, network, x0, key) -> Metrics:
    """Held-out -VLB in nats/image and bits/dim (as DDPM reports it), from
    `eval_timesteps` stratified timesteps per image, and the simple loss."""
    nelbo_B, mse = gd.heldout_nelbo(
        s, d.prediction, d.variance, network, x0, key, d.eval_timesteps
    )
    dims = math.prod(x0.shape[1:])
    return {
        "model/loss": mse,
        "model/nelbo": jnp.mean(nelbo_B),
        "model/bits_per_dim": jnp.mean(nelbo_B) / (dims * math.log(2)),
    }


_DDPM_SAMPLERS = {  # name -> (config.diffusion) -> sampler(s, denoise, x_T, keys)
    "ddpm": lambda d: functools.partial(samplers.ddpm, variance=d.variance),
    "ddim": lambda d: functools.partial(
        samplers.ddim, steps=d.sample_steps, eta=d.ddim_eta
    ),
    "dpm_solver_pp_2m": lambda d: functools.partial(
        samplers.dpm_solver_pp_2m, steps=d.sample_steps
    ),
}


def _ddpm(d: ml_collections.ConfigDict) -> Process:
    """DDPM (Ho et al. 2020): x_t at integer t, eps / x0 / v targets."""
    s = gd.make_schedule(d.schedule, d.num_timesteps, d.beta_start, d.beta_end)

    def noised(x0, t_key, eps_key):
        t_B = jax.random.randint(t_key, (x0.shape[0],), 0, d.num_timesteps)
        eps = jax.random.normal(eps_key, x0.shape)
        x_t = gd.q_sample(s, x0, t_B, eps)
        return t_B, x_t, gd.target(s, d.prediction, x0, t_B, eps)

    def loss(x0, x_t, t_B, out, target):
        mse, metrics = _mse(x0, x_t, t_B, out, target)
        if d.loss == "simple":
            return mse, metrics
        # "vlb": a one-sample estimate of the bound, T * L_t + L_T, in nats per dim.
        x0_pred, _ = gd.to_x0_eps(s, d.prediction, x_t, t_B, out)
        vlb = d.num_timesteps * gd.vlb_term(s, d.variance, x0, x_t, t_B, x0_pred)
        dims = math.prod(x0.shape[1:])
        return jnp.mean(vlb + gd.prior_kl(s, x0)) / dims, metrics

    def noise_level(t):
        abar = s.alphas_cumprod[t]
        return jnp.sqrt((1 - abar) / abar)

    return Process(
        noised=noised,
        network_inputs=lambda x_t, t_B: (x_t, t_B),
        estimates=functools.partial(gd.to_x0_eps, s, d.prediction),
        noise_level=noise_level,
        sample=functools.partial(_DDPM_SAMPLERS[d.sampler](d), s),
        x_T_scale=1.0,
        sampler_steps=d.num_timesteps if d.sampler == "ddpm" else d.sample_steps,
        loss=loss,
        evaluate=functools.partial(_ddpm_heldout, d, s),
    )


def _continuous(d, taus, alpha_sigma, churn: dict, **fns) -> Process:
    """A continuous objective's Process: its grid `taus` (tau_max down to 0)
    and `alpha_sigma(tau)`, sampled by samplers.py's ODE solvers."""
    if d.sampler == "dpm_solver_pp_2m":
        run = functools.partial(
            samplers.dpm_solver_pp_2m_continuous, taus=taus, alpha_sigma=alpha_sigma
        )
    else:
        run = functools.partial(samplers.ode, taus=taus, method=d.sampler, **churn)
    return Process(
        noise_level=functools.partial(obj.noise_level, alpha_sigma),
        sample=run,
        # sigma(tau_max) = tau_max for both: EDM's sigma_max, flow's t = 1.
        x_T_scale=float(taus[0]),
        sampler_steps=d.sample_steps,
        loss=_mse,
        **fns,
    )


def _edm_check(d: ml_collections.ConfigDict) -> None:
    if d.churn and d.sampler not in ("euler", "heun"):
        raise ValueError(
            "config.diffusion.churn adds noise between the steps of euler or "
            f"heun, not of {d.sampler!r}: set config.diffusion.churn=0"
        )


def _edm(d: ml_collections.ConfigDict) -> Process:
    """EDM (Karras et al. 2022): F preconditioned, ln sigma ~ N(P_mean, P_std^2)."""

    def noised(x0, key, unused_key):
        del unused_key  # both draws come from `key`
        tau_key, eps_key = jax.random.split(key)
        eps = jax.random.normal(eps_key, x0.shape)
        sigma_B = obj.edm_training_sigmas(tau_key, x0.shape[0], d.p_mean, d.p_std)
        sigma = sigma_B[:, None, None, None]
        x = x0 + sigma * eps
        return sigma_B, x, obj.edm_target(x0, x, sigma, d.sigma_data)

    def network_inputs(x, sigma_B):
        _, _, c_in, c_noise = obj.edm_precondition(sigma_B, d.sigma_data)
        return c_in[:, None, None, None] * x, obj.TIME_SCALE * c_noise

    def estimates(x, sigma_B, out):
        sigma = sigma_B[:, None, None, None]
        x0 = obj.edm_denoised(x, sigma, out, d.sigma_data)
        return x0, (x - x0) / sigma

    return _continuous(
        d,
        obj.karras_sigmas(d.sample_steps, d.sigma_min, d.sigma_max, d.rho),
        obj.edm_alpha_sigma,
        {
            "churn": d.churn,
            "churn_range": (d.churn_min, d.churn_max),
            "churn_noise": d.churn_noise,
        },
        noised=noised,
        network_inputs=network_inputs,
        estimates=estimates,
    )


def _flow_check(d: ml_collections.ConfigDict) -> None:
    check_name("config.diffusion.timesteps", d.timesteps, obj.TIMESTEPS)


def _flow(d: ml_collections.ConfigDict) -> Process:
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t eps, the network
    predicting the velocity eps - x0 (its own dx/dt)."""

    def noised(x0, key, unused_key):
        del unused_key  # both draws come from `key`
        t_key, eps_key = jax.random.split(key)
        eps = jax.random.normal(eps_key, x0.shape)
        t_B = obj.flow_timesteps(t_key, x0.shape[0], d.timesteps, d.t_mean, d.t_std)
        x = obj.flow_interpolate(x0, eps, t_B[:, None, None, None])
        return t_B, x, obj.flow_target(x0, eps)

    def estimates(x, t_B, velocity):
        return obj.flow_denoised(x, t_B[:, None, None, None], velocity), velocity

    return _continuous(
        d,
        obj.flow_times(d.sample_steps),
        obj.flow_alpha_sigma,
        {},
        noised=noised,
        network_inputs=lambda x, t_B: (x, obj.TIME_SCALE * t_B),
        estimates=estimates,
    )


DDPM = Objective(
    name="ddpm",
    keys={
        "num_timesteps": 1000,
        "schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "prediction": "eps",
        "loss": "simple",
        "variance": "small",
        "ddim_eta": 0.0,
        "eval_timesteps": 50,
    },
    samplers=tuple(_DDPM_SAMPLERS),
    # Its samplers clip x0 to the pixel range [-1, 1].
    latents=False,
    check=_ddpm_check,
    make=_ddpm,
)
EDM = Objective(
    name="edm",
    keys={
        "sigma_data": 0.5,
        "p_mean": -1.2,
        "p_std": 1.2,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "rho": 7.0,
        "churn": 0.0,
        "churn_min": 0.0,
        "churn_max": 1e9,
        "churn_noise": 1.0,
    },
    samplers=("euler", "heun", "dpm_solver_pp_2m"),
    latents=True,
    check=_edm_check,
    make=_edm,
)
FLOW = Objective(
    name="flow",
    keys={"timesteps": "logit_normal", "t_mean": 0.0, "t_std": 1.0},
    samplers=("euler", "heun", "midpoint", "dpm_solver_pp_2m"),
    latents=True,
    check=_flow_check,
    make=_flow,
)
OBJECTIVES = {o.name: o for o in (DDPM, EDM, FLOW)}
