"""Discrete-time Gaussian diffusion: schedules, target conversions, posterior, VLB
terms and the held-out bound.

Ho et al. 2020 (DDPM) for the process and the bound; Nichol & Dhariwal 2021 for
the cosine schedule; Salimans & Ho 2022 for v-prediction. Timesteps are
integers t = 0..T-1, x_t ~ N(sqrt(abar_t) x_0, (1 - abar_t) I).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")  # what the network outputs
VARIANCES = ("small", "large")  # of p(x_{t-1} | x_t)


class Schedule(NamedTuple):
    betas: jax.Array
    alphas_cumprod: jax.Array  # abar_t
    alphas_cumprod_prev: jax.Array  # abar_{t-1}, with abar_{-1} = 1
    posterior_variance: jax.Array  # beta~_t
    posterior_log_variance: jax.Array  # clipped: beta~_0 = 0 is replaced by beta~_1


def make_schedule(
    kind: str, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
    """`linear` (DDPM) or `cosine` (improved DDPM) betas, computed in float64."""
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    elif kind == "cosine":
        s = 0.008
        f = (
            np.cos(
                (np.arange(num_timesteps + 1) / num_timesteps + s)
                / (1 + s)
                * math.pi
                / 2
            )
            ** 2
        )
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    else:
        raise ValueError(f"unknown diffusion.schedule {kind!r}; use linear|cosine")
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))
    return Schedule(
        *(
            jnp.asarray(a, jnp.float32)
            for a in (betas, abar, abar_prev, post_var, post_log_var)
        )
    )


def _at(a: jax.Array, t_B: jax.Array) -> jax.Array:
    return a[t_B][:, None, None, None]  # broadcast over H, W, C


def q_sample(s: Schedule, x0, t_B, eps):
    """x_t given x_0 and noise."""
    abar = _at(s.alphas_cumprod, t_B)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * eps


def target(s: Schedule, kind: str, x0, t_B, eps):
    """The regression target of a `kind` (eps | x0 | v) prediction."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        abar = _at(s.alphas_cumprod, t_B)
        return jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0
    raise ValueError(f"unknown diffusion.prediction {kind!r}; use eps|x0|v")


def to_x0_eps(s: Schedule, kind: str, x_t, t_B, out):
    """(x_0, eps) implied by a `kind` prediction `out` at (x_t, t): exact inverses."""
    abar = _at(s.alphas_cumprod, t_B)
    a, sigma = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    if kind == "eps":
        return (x_t - sigma * out) / a, out
    if kind == "x0":
        return out, (x_t - a * out) / sigma
    if kind == "v":
        return a * x_t - sigma * out, sigma * x_t + a * out
    raise ValueError(f"unknown diffusion.prediction {kind!r}; use eps|x0|v")


def posterior(s: Schedule, x0, x_t, t_B):
    """Mean and log-variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7)."""
    abar, abar_prev = _at(s.alphas_cumprod, t_B), _at(s.alphas_cumprod_prev, t_B)
    beta = _at(s.betas, t_B)
    mean = (
        beta * jnp.sqrt(abar_prev) * x0 + (1 - abar_prev) * jnp.sqrt(1 - beta) * x_t
    ) / (1 - abar)
    return mean, _at(s.posterior_log_variance, t_B)


def model_log_variance(s: Schedule, variance: str, t_B):
    """log sigma_t^2 of p(x_{t-1} | x_t): "small" = beta~_t, "large" = beta_t."""
    if variance == "small":
        return _at(s.posterior_log_variance, t_B)
    if variance == "large":  # beta~_1 at t = 0, as in improved-diffusion
        return _at(jnp.log(jnp.append(s.posterior_variance[1], s.betas[1:])), t_B)
    raise ValueError(f"unknown diffusion.variance {variance!r}; use small|large")


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * jnp.exp(-logvar2)
        - 1.0
    )


def discretized_gaussian_nll(x0, mean, log_scale):
    """-log p(x_0) for 8-bit data in [-1, 1] under a Gaussian discretised into
    256 bins (DDPM's decoder L_0), elementwise, in nats."""
    centered = x0 - mean
    inv_std = jnp.exp(-log_scale)
    cdf_plus = jax.scipy.special.ndtr(inv_std * (centered + 1 / 255))
    cdf_min = jax.scipy.special.ndtr(inv_std * (centered - 1 / 255))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1 - cdf_min, 1e-12))
    log_probs = jnp.where(
        x0 < -0.999,
        log_cdf_plus,
        jnp.where(
            x0 > 0.999,
            log_one_minus_cdf_min,
            jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12)),
        ),
    )
    return -log_probs


def prior_kl(s: Schedule, x0):
    """KL(q(x_{T-1} | x_0) || N(0, I)) per example, in nats (L_T)."""
    t_B = jnp.full((x0.shape[0],), s.betas.shape[0] - 1)
    abar = _at(s.alphas_cumprod, t_B)
    kl = normal_kl(jnp.sqrt(abar) * x0, jnp.log(1 - abar), 0.0, 0.0)
    return jnp.sum(kl, axis=(1, 2, 3))


def vlb_term(s: Schedule, variance: str, x0, x_t, t_B, x0_pred):
    """L_{t} per example in nats: KL of the posterior to the model's step for
    t > 0, the discretised decoder NLL at t = 0 (DDPM eq. 5)."""
    true_mean, true_logvar = posterior(s, x0, x_t, t_B)
    model_mean, _ = posterior(s, x0_pred, x_t, t_B)
    model_logvar = model_log_variance(s, variance, t_B)
    kl = jnp.sum(normal_kl(true_mean, true_logvar, model_mean, model_logvar), (1, 2, 3))
    nll = jnp.sum(
        discretized_gaussian_nll(x0, model_mean, 0.5 * model_logvar), (1, 2, 3)
    )
    return jnp.where(t_B == 0, nll, kl)


def heldout_nelbo(s: Schedule, prediction: str, variance: str, network, x0, key, k):
    """(-VLB per example in nats, the simple loss) from `k` stratified
    timesteps per example; `network(x_t, t_B)` is the denoiser's output."""
    num_timesteps = s.betas.shape[0]
    if num_timesteps % k:
        raise ValueError(
            f"diffusion.eval_timesteps={k} must divide num_timesteps={num_timesteps}"
        )

    def term(i):
        t_key, eps_key = jax.random.split(jax.random.fold_in(key, i))
        # Stratum i covers timesteps [i T/k, (i+1) T/k): unbiased for the sum.
        t_B = i * (num_timesteps // k) + jax.random.randint(
            t_key, (x0.shape[0],), 0, num_timesteps // k
        )
        eps = jax.random.normal(eps_key, x0.shape)
        x_t = q_sample(s, x0, t_B, eps)
        out = network(x_t, t_B)
        x0_pred, _ = to_x0_eps(s, prediction, x_t, t_B, out)
        mse = jnp.mean((out - target(s, prediction, x0, t_B, eps)) ** 2)
        return vlb_term(s, variance, x0, x_t, t_B, x0_pred), mse

    terms_KB, mse_K = jax.lax.map(term, jnp.arange(k))
    nelbo_B = num_timesteps / k * jnp.sum(terms_KB, 0) + prior_kl(s, x0)
    return nelbo_B, jnp.mean(mse_K)
