"""Diffusion samplers that run on device in `lax` loops: DDPM ancestral, DDIM, DPM-Solver++(2M).

Each takes `denoise(x_t, t_B) -> (x0, eps)` (guidance already applied) and one
PRNG key per image (each image's noise is its own, whatever it is batched
with), and returns x_0 in [-1, 1]. Ho et al. 2020; Song et al. 2021 (DDIM); Lu et al.
2022 (DPM-Solver++, multistep second order, data prediction).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.families import gaussian_diffusion as gd

Denoise = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def respaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` timesteps from T-1 down to 0, evenly spaced (both ends included)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampler steps must be in [1, {num_timesteps}], got {steps}")
    return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def split_per_image(keys_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two new keys per image."""
    both_B2 = jax.vmap(jax.random.split)(keys_B)
    return both_B2[:, 0], both_B2[:, 1]


def _noise(keys_B: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(next keys, noise shaped like x), row i from keys_B[i] alone."""
    keys_B, subkeys_B = split_per_image(keys_B)
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(subkeys_B)
    return keys_B, noise.astype(x.dtype)


def _full(t, x):
    return jnp.full((x.shape[0],), t, jnp.int32)


def ddpm(s: gd.Schedule, denoise: Denoise, x_T, keys_B, *, variance: str = "small"):
    """Ancestral sampling through all T steps of p(x_{t-1} | x_t)."""
    num_timesteps = s.betas.shape[0]

    def body(i, carry):
        x, keys_B = carry
        t_B = _full(num_timesteps - 1 - i, x)
        x0, _ = denoise(x, t_B)
        mean, _ = gd.posterior(s, jnp.clip(x0, -1, 1), x, t_B)
        keys_B, noise = _noise(keys_B, x)
        std = jnp.exp(0.5 * gd.model_log_variance(s, variance, t_B))
        return jnp.where(t_B[:, None, None, None] > 0, mean + std * noise, mean), keys_B

    x, _ = jax.lax.fori_loop(0, num_timesteps, body, (x_T, keys_B))
    return jnp.clip(x, -1, 1)


def ddim(
    s: gd.Schedule, denoise: Denoise, x_T, keys_B, *, steps: int, eta: float = 0.0
):
    """DDIM (Song et al. eq. 12) on a respaced grid; eta=0 is deterministic, eta=1
    on the full grid is DDPM with the "small" variance."""
    ts = jnp.asarray(respaced_timesteps(s.betas.shape[0], steps))
    prev = jnp.append(ts[1:], -1)  # -1: the clean image, abar = 1

    def body(i, carry):
        x, keys_B = carry
        t_B = _full(ts[i], x)
        x0, _ = denoise(x, t_B)
        x0 = jnp.clip(x0, -1, 1)
        abar = s.alphas_cumprod[ts[i]]
        eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)  # matches clipped x0
        abar_prev = jnp.where(prev[i] >= 0, s.alphas_cumprod[prev[i]], 1.0)
        sigma = eta * jnp.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        keys_B, noise = _noise(keys_B, x)
        x = (
            jnp.sqrt(abar_prev) * x0
            + jnp.sqrt(1 - abar_prev - sigma**2) * eps
            + sigma * noise
        )
        return x, keys_B

    x, _ = jax.lax.fori_loop(0, steps, body, (x_T, keys_B))
    return jnp.clip(x, -1, 1)


def dpm_solver_pp_2m(s: gd.Schedule, denoise: Denoise, x_T, keys_B, *, steps: int):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) from t = T-1 to t = 0 in `steps`
    model calls; first order on the first step (and the last, below 15 steps)."""
    del keys_B  # deterministic
    if not 1 <= steps < s.betas.shape[0]:  # `steps` intervals need steps + 1 points
        raise ValueError(
            f"dpm_solver_pp_2m takes 1 to {s.betas.shape[0] - 1} sampler steps "
            f"with {s.betas.shape[0]} timesteps, got {steps}"
        )
    ts = jnp.asarray(respaced_timesteps(s.betas.shape[0], steps + 1))
    abar = s.alphas_cumprod[ts]
    alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    lam = jnp.log(alpha) - jnp.log(sigma)

    def body(i, carry):
        x, x0_prev, h_prev = carry
        x0, _ = denoise(x, _full(ts[i], x))
        x0 = jnp.clip(x0, -1, 1)
        h = lam[i + 1] - lam[i]
        r = h_prev / h
        second = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        first_order = (i == 0) | ((i == steps - 1) & (steps < 15))
        d = jnp.where(first_order, x0, second)
        x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * jnp.expm1(-h) * d
        return x, x0, h

    init = (x_T, jnp.zeros_like(x_T), jnp.ones(()))
    x, _, _ = jax.lax.fori_loop(0, steps, body, init)
    return jnp.clip(x, -1, 1)
