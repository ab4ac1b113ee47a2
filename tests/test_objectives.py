"""The continuous objectives' math (objectives.py) and their samplers against
closed forms: no network, so every test here runs in a second or two."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.families import objectives as obj
from gen_jax.families import samplers


def test_edm_preconditioning_identities():
    sd = 0.5
    sigma = jnp.asarray([0.002, 0.1, 0.5, 2.0, 80.0])
    c_skip, c_out, c_in, c_noise = obj.edm_precondition(sigma, sd)
    # Unit variance in and out for data of std sigma_data (EDM App. B.6).
    np.testing.assert_allclose(c_in**2 * (sigma**2 + sd**2), 1.0, rtol=1e-6)
    # ...and F's training target, (x0 - c_skip x) / c_out, has unit variance.
    np.testing.assert_allclose(
        ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2, 1.0, rtol=1e-5
    )
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)
    # EDM's weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
    # makes lambda |D - x0|^2 equal |F - target|^2 for any F: the loss's MSE.
    key = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.uniform(key[0], (5, 3), minval=-1, maxval=1)
    s = sigma[:, None]
    x = x0 + s * jax.random.normal(key[1], x0.shape)
    out = jax.random.normal(key[2], x0.shape)
    weight = (s**2 + sd**2) / (s * sd) ** 2
    weighted = weight * (obj.edm_denoised(x, s, out, sd) - x0) ** 2
    np.testing.assert_allclose(
        weighted, (out - obj.edm_target(x0, x, s, sd)) ** 2, rtol=2e-4, atol=1e-6
    )
    # F = target denoises exactly; at tiny sigma D is x itself.
    target = obj.edm_target(x0, x, s, sd)
    np.testing.assert_allclose(obj.edm_denoised(x, s, target, sd), x0, atol=1e-5)
    np.testing.assert_allclose(c_skip[0], 1.0, atol=2e-5)
    np.testing.assert_allclose(c_out[0], 0.002, rtol=1e-4)


def test_training_noise_distributions():
    sigmas = obj.edm_training_sigmas(jax.random.key(0), 20000, -1.2, 1.2)
    logs = np.log(np.asarray(sigmas))
    assert abs(logs.mean() + 1.2) < 0.05 and abs(logs.std() - 1.2) < 0.05
    for kind in obj.TIMESTEPS:
        t = np.asarray(obj.flow_timesteps(jax.random.key(1), 20000, kind))
        assert 0 < t.min() and t.max() < 1
        assert abs(np.median(t) - 0.5) < 0.02
    t = np.asarray(obj.flow_timesteps(jax.random.key(1), 20000, "logit_normal"))
    logit = np.log(t / (1 - t))
    assert abs(logit.std() - 1.0) < 0.03
    with pytest.raises(ValueError, match="diffusion.timesteps 'cosine'"):
        obj.flow_timesteps(jax.random.key(0), 4, "cosine")


def test_flow_target_is_the_path_derivative_and_conversions_invert():
    key = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.uniform(key[0], (4, 6), minval=-1, maxval=1)
    eps = jax.random.normal(key[1], x0.shape)
    t = jax.random.uniform(key[2], (4, 1))
    x, dx_dt = jax.jvp(
        lambda t: obj.flow_interpolate(x0, eps, t), (t,), (jnp.ones_like(t),)
    )
    v = obj.flow_target(x0, eps)
    np.testing.assert_allclose(dx_dt, v, atol=1e-6)
    np.testing.assert_allclose(obj.flow_denoised(x, t, v), x0, atol=1e-5)
    # Flow is EDM in disguise: x / (1 - t) = x0 + (t / (1 - t)) eps.
    level = obj.noise_level(obj.flow_alpha_sigma, t)
    np.testing.assert_allclose(x / (1 - t), x0 + level * eps, atol=1e-4)
    assert obj.noise_level(obj.flow_alpha_sigma, jnp.ones(())) == np.inf


def test_karras_sigmas():
    sigmas = obj.karras_sigmas(18, 0.002, 80.0, 7.0)
    assert len(sigmas) == 19 and sigmas[-1] == 0
    np.testing.assert_allclose([sigmas[0], sigmas[-2]], [80.0, 0.002], rtol=1e-12)
    assert np.all(np.diff(sigmas) < 0)
    # Evenly spaced in sigma^(1/rho).
    np.testing.assert_allclose(np.diff(np.diff(sigmas[:-1] ** (1 / 7))), 0, atol=1e-12)
    with pytest.raises(ValueError, match="sigma_min < diffusion.sigma_max"):
        obj.karras_sigmas(4, 1.0, 0.5, 7.0)


def _linear_ode(k: float):
    """denoise() whose ODE is dx/dtau = k x: x0_hat = x (1 - k tau)."""

    def denoise(x, tau_B):
        tau = tau_B[:, None]
        x0 = x * (1 - k * tau)
        return x0, (x - x0) / tau

    return denoise


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_ode_methods_integrate_a_linear_ode_at_their_order(method, order):
    k, x1 = -1.5, jnp.asarray([[1.0, -2.0]])
    keys = jax.random.split(jax.random.key(0), 1)
    exact = x1 * np.exp(k * (0.1 - 1.0))
    errors = []
    for steps in (8, 16, 32):
        taus = np.linspace(1.0, 0.1, steps + 1)  # not to 0: no Euler last step
        got = samplers.ode(_linear_ode(k), x1, keys, taus, method=method)
        errors.append(float(jnp.max(jnp.abs(got - exact))))
    rates = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    np.testing.assert_allclose(rates, order, atol=0.15)


ALPHA_SIGMA = {"edm": obj.edm_alpha_sigma, "flow": obj.flow_alpha_sigma}


def _gaussian_denoise(objective: str, s: float):
    """The exact denoiser of x0 ~ N(0, s^2) under `objective`, and its
    probability-flow map: x at tau from x at tau_max is a rescaling by the
    marginal std ratio."""

    def marginal_std(tau):
        alpha, sigma = ALPHA_SIGMA[objective](tau)
        return np.sqrt(alpha**2 * s**2 + sigma**2)

    def denoise(x, tau_B):
        tau = tau_B[:, None]
        alpha, sigma = ALPHA_SIGMA[objective](tau)
        x0 = alpha * s**2 / (alpha**2 * s**2 + sigma**2) * x
        return x0, (x - x0) / tau

    return denoise, marginal_std


def _sample_gaussian(objective: str, sampler: str, steps: int):
    """(max error, x_T std) of `sampler` against the exact flow of x0 ~ N(0, 0.5^2)."""
    s = 0.5
    denoise, marginal_std = _gaussian_denoise(objective, s)
    if objective == "edm":
        taus = obj.karras_sigmas(steps, 0.002, 80.0, 7.0)
    else:
        taus = obj.flow_times(steps)
    x_T = jax.random.normal(jax.random.key(0), (64, 3)) * marginal_std(taus[0])
    keys = jax.random.split(jax.random.key(1), 64)
    if sampler == "dpm_solver_pp_2m":
        run = functools.partial(
            samplers.dpm_solver_pp_2m_continuous,
            alpha_sigma=ALPHA_SIGMA[objective],
        )
    else:
        run = functools.partial(samplers.ode, method=sampler)
    got = run(denoise, x_T, keys, taus)
    return float(jnp.max(jnp.abs(got - x_T * s / marginal_std(taus[0]))))


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_samplers_reach_the_exact_flow_of_gaussian_data(objective):
    """For Gaussian data the ODE's solution is a rescaling of the start. At 18
    steps every sampler lands near it and the higher-order ones at most half
    as far as Euler (measured: EDM euler 0.20, heun 0.073, midpoint 0.006,
    DPM-Solver++ 0.082; flow 0.11, 0.007, 5e-5, 0.015, for values of std 0.5)."""
    euler = _sample_gaussian(objective, "euler", 18)
    assert euler < 0.25
    for sampler in ("heun", "midpoint", "dpm_solver_pp_2m"):
        error = _sample_gaussian(objective, sampler, 18)
        assert error < min(0.1, 0.5 * euler), (sampler, error, euler)


def test_churn_adds_fresh_noise_only_when_asked():
    denoise, _ = _gaussian_denoise("edm", 0.5)
    taus = obj.karras_sigmas(6, 0.002, 80.0, 7.0)
    x_T = 80.0 * jax.random.normal(jax.random.key(0), (4, 3))
    run = lambda seed, churn: samplers.ode(
        denoise,
        x_T,
        jax.random.split(jax.random.key(seed), 4),
        taus,
        method="heun",
        churn=churn,
    )
    np.testing.assert_array_equal(run(1, 0.0), run(2, 0.0))
    assert not np.allclose(run(1, 40.0), run(2, 40.0))
    assert np.isfinite(run(1, 40.0)).all()
