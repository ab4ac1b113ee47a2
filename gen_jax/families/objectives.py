"""The continuous diffusion objectives' math, EDM and flow matching, beside
DDPM's (gaussian_diffusion.py); their records are in diffusion_objectives.py.

Every objective noises data as x = alpha(tau) x0 + sigma(tau) eps, at a noise
coordinate tau of its own:

- ddpm (gaussian_diffusion.py): tau = an integer timestep t in [0, T),
  alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t);
- edm (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models", Table 1): tau = sigma, alpha = 1 (variance exploding);
  the network F is preconditioned, D(x; sigma) = c_skip x + c_out F(c_in x,
  c_noise), trained at ln sigma ~ N(P_mean, P_std^2) with weight
  (sigma^2 + sigma_data^2) / (sigma sigma_data)^2;
- flow (rectified flow, Liu et al. 2022; flow matching, Lipman et al. 2022):
  tau = t in [0, 1], alpha = 1 - t, sigma = t; the network predicts the
  velocity eps - x0, at t uniform or logit-normal (Esser et al. 2024, SD3).

For both continuous objectives the probability-flow ODE is dx/dtau = (x -
x0_hat) / tau (for flow that is the velocity itself), so one set of samplers
(samplers.py) integrates either from tau_max down to 0.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

TIMESTEPS = ("uniform", "logit_normal")  # flow's training distribution of t
# The network's noise input is c_noise (edm) or t (flow) times this, so the
# UNet's sinusoidal embedding (made for DDPM's 0..999 timesteps) resolves it.
TIME_SCALE = 1000.0


def edm_precondition(sigma, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) at noise level `sigma` (EDM Table 1)."""
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / jnp.sqrt(var)
    c_in = 1 / jnp.sqrt(var)
    c_noise = jnp.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


def edm_training_sigmas(key, n: int, p_mean: float, p_std: float) -> jax.Array:
    """n training noise levels, ln sigma ~ N(p_mean, p_std^2)."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key, (n,)))


def edm_denoised(x, sigma, out, sigma_data: float):
    """D(x; sigma) from the network output F."""
    c_skip, c_out, _, _ = edm_precondition(sigma, sigma_data)
    return c_skip * x + c_out * out


def edm_target(x0, x, sigma, sigma_data: float):
    """What F is trained toward: (x0 - c_skip x) / c_out (the denoised
    estimate's error, rescaled to unit weight)."""
    c_skip, c_out, _, _ = edm_precondition(sigma, sigma_data)
    return (x0 - c_skip * x) / c_out


def edm_alpha_sigma(sigma):
    """(alpha, sigma) = (1, sigma): EDM's x = x0 + sigma eps (numpy in, numpy
    out: samplers build their grids on the host)."""
    ones = np.ones_like if isinstance(sigma, np.ndarray) else jnp.ones_like
    return ones(sigma), sigma


def karras_sigmas(
    steps: int, sigma_min: float, sigma_max: float, rho: float
) -> np.ndarray:
    """EDM's sampling grid (eq. 5): `steps` noise levels from sigma_max to
    sigma_min, spaced evenly in sigma^(1/rho), then 0."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"need 0 < diffusion.sigma_min < diffusion.sigma_max, got "
            f"{sigma_min}, {sigma_max}"
        )
    ramp = np.linspace(0, 1, steps) if steps > 1 else np.zeros(1)
    inv_rho = 1 / rho
    sigmas = (
        sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)
    ) ** rho
    return np.append(sigmas, 0.0).astype(np.float64)


def flow_timesteps(key, n: int, kind: str, mean: float = 0.0, std: float = 1.0):
    """n training times t in (0, 1): uniform, or logit-normal (t = sigmoid(u),
    u ~ N(mean, std^2); SD3 uses mean 0, std 1)."""
    if kind == "uniform":
        # Open interval: t = 0 (clean data) teaches nothing.
        return jax.random.uniform(key, (n,), minval=1e-5, maxval=1.0)
    if kind == "logit_normal":
        return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))
    raise ValueError(
        f"unknown diffusion.timesteps {kind!r}; valid: logit_normal, uniform"
    )


def flow_interpolate(x0, eps, t):
    """x_t = (1 - t) x0 + t eps."""
    return (1 - t) * x0 + t * eps


def flow_target(x0, eps):
    """The velocity d x_t / dt = eps - x0."""
    return eps - x0


def flow_alpha_sigma(t):
    """(alpha, sigma) = (1 - t, t): flow's x_t = (1 - t) x0 + t eps."""
    return 1 - t, t


def flow_times(steps: int) -> np.ndarray:
    """Flow's sampling grid: `steps` intervals from t = 1 to 0, even in t."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    return np.linspace(1.0, 0.0, steps + 1)


def flow_denoised(x, t, velocity):
    """x0_hat = x - t v."""
    return x - t * velocity


def noise_level(alpha_sigma, tau):
    """The EDM-equivalent noise level sigma / alpha at tau, of an objective's
    `alpha_sigma(tau)` (flow: t / (1 - t), inf at t = 1): guidance intervals
    are given in it, for every objective."""
    alpha, sigma = alpha_sigma(tau)
    return jnp.where(alpha > 0, sigma / jnp.where(alpha > 0, alpha, 1.0), math.inf)
