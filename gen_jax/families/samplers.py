"""Diffusion samplers that run on device in `lax` loops.

DDPM's discrete timesteps: ancestral, DDIM, DPM-Solver++(2M); each takes
`denoise(x_t, t_B) -> (x0, eps)` and returns x_0 in [-1, 1]. The continuous
objectives (objectives.py, EDM and flow): Euler, Heun (EDM's second order, with
optional churn), midpoint and DPM-Solver++(2M) on a static grid of tau from
tau_max to 0; each takes `denoise(x, tau_B) -> (x0, dx/dtau)` and returns x at
the grid's end, unclipped (it may be a latent). Guidance is applied inside
`denoise`. Every sampler takes one PRNG key per image, so an image's noise is
its own whatever it is batched with. Ho et al. 2020; Song et al. 2021 (DDIM);
Lu et al. 2022 (DPM-Solver++, multistep second order, data prediction); Karras
et al. 2022 (EDM, Algorithms 1 and 2).
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


def _full(t, x, dtype=jnp.int32):
    return jnp.full((x.shape[0],), t, dtype)


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


# The continuous objectives' (EDM, flow) solvers.
ODE_METHODS = ("euler", "heun", "midpoint")


def ode(
    denoise: Denoise,
    x,
    keys_B,
    taus: np.ndarray,
    *,
    method: str,
    churn: float = 0.0,
    churn_range: tuple[float, float] = (0.0, float("inf")),
    churn_noise: float = 1.0,
):
    """Integrates dx/dtau from taus[0] down to taus[-1] (len(taus) - 1 steps).

    euler: 1 model call a step; midpoint: 2; heun: 2, except a last step to
    tau = 0, which is Euler (EDM Alg. 1), so N Heun steps to 0 make 2N - 1
    calls. churn > 0 (EDM Alg. 2, variance-exploding tau = sigma only) first
    raises tau_i to tau_i (1 + gamma), gamma = min(churn / N, sqrt(2) - 1) for
    tau_i in churn_range, adding the matching fresh noise."""
    if method not in ODE_METHODS:
        raise ValueError(
            f"unknown ODE method {method!r}; valid: {', '.join(ODE_METHODS)}"
        )
    taus = np.asarray(taus, np.float64)
    steps = len(taus) - 1
    lo, hi = churn_range
    in_range = (taus[:-1] >= lo) & (taus[:-1] <= hi)
    gammas = np.where(in_range, min(churn / steps, np.sqrt(2) - 1), 0.0)
    taus_j, gammas_j = jnp.asarray(taus, jnp.float32), jnp.asarray(gammas, jnp.float32)

    def derivative(x, tau):
        return denoise(x, _full(tau, x, jnp.float32))[1]

    def step(kind):
        def body(i, carry):
            x, keys_B = carry
            tau, nxt = taus_j[i], taus_j[i + 1]
            if churn > 0:
                raised = tau * (1 + gammas_j[i])
                keys_B, noise = _noise(keys_B, x)
                x = x + jnp.sqrt(raised**2 - tau**2) * churn_noise * noise
                tau = raised
            d = derivative(x, tau)
            if kind == "euler":
                x = x + (nxt - tau) * d
            elif kind == "heun":
                d_next = derivative(x + (nxt - tau) * d, nxt)
                x = x + (nxt - tau) * (d + d_next) / 2
            else:  # midpoint
                mid = (tau + nxt) / 2
                x = x + (nxt - tau) * derivative(x + (mid - tau) * d, mid)
            return x, keys_B

        return body

    # Heun's correction would evaluate the model at tau = 0, where dx/dtau
    # divides by zero: the last step is Euler's.
    last_euler = method == "heun" and taus[-1] == 0
    x, keys_B = jax.lax.fori_loop(0, steps - last_euler, step(method), (x, keys_B))
    if last_euler:
        x, _ = step("euler")(steps - 1, (x, keys_B))
    return x


def dpm_solver_pp_2m_continuous(
    denoise: Denoise, x, keys_B, taus: np.ndarray, *, alpha_sigma
):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) over a continuous grid with
    x = alpha(tau) x0 + sigma(tau) eps, `alpha_sigma(taus) -> (alpha, sigma)`
    on host arrays (EDM: 1, tau; flow: 1 - tau, tau), one model call per step. Its coefficients are computed on
    the host in float64: lambda = ln(alpha / sigma) is -inf at flow's t = 1 and
    +inf at tau = 0, where the update's limits are the first-order ones (x =
    the denoised estimate at tau = 0). First order on the first step, and on
    the last below 15 steps, as for DDPM."""
    del keys_B  # deterministic
    taus = np.asarray(taus, np.float64)
    steps = len(taus) - 1
    a, s = (np.asarray(v, np.float64) for v in alpha_sigma(taus))
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.log(a) - np.log(s)
        h = lam[1:] - lam[:-1]
        ratio = np.where(s[:-1] > 0, s[1:] / s[:-1], 0.0)
        gain = -a[1:] * np.expm1(-h)
        # 1 / (2 r), r = h_{i-1} / h_i: 0 where h_{i-1} is infinite.
        half_inv_r = np.zeros(steps)
        half_inv_r[1:] = np.where(np.isfinite(h[:-1]), h[1:] / (2 * h[:-1]), 0.0)
    half_inv_r[~np.isfinite(half_inv_r)] = 0.0
    if steps < 15:
        half_inv_r[-1] = 0.0
    coef = [jnp.asarray(c, jnp.float32) for c in (ratio, gain, half_inv_r)]
    taus_j = jnp.asarray(taus, jnp.float32)

    def body(i, carry):
        x, x0_prev = carry
        x0, _ = denoise(x, _full(taus_j[i], x, jnp.float32))
        c = coef[2][i]
        d = (1 + c) * x0 - c * x0_prev
        return coef[0][i] * x + coef[1][i] * d, x0

    x, _ = jax.lax.fori_loop(0, steps, body, (x, jnp.zeros_like(x)))
    return x
