import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gan_digits
from gen_jax import data, optim, step
from gen_jax.families import Family, gan
from gen_jax.train_state import TrainState


def _family(**gan_overrides):
    config = gan_digits.get_config("smoke")
    # One update of each role per step unless a test asks for intervals (the
    # smoke variant itself runs the generator and lazy R1 every 2 steps).
    config.gan.update({"disc_steps": 1, "r1_gamma": 0.0, "r1_every": 1} | gan_overrides)
    for role in ("disc", "gen"):  # smoke warms up from lr 0: one step would not move
        config.optim[role].warmup_steps = 0
    return config, gan.make(config)


def _state(config, family):
    batch = data.dummy_batch(config.data)
    params = jax.jit(family.init)(jax.random.key(0), batch)
    return TrainState.create(params, optim.make(config, family.roles))


def _batch(n=8):
    rng = np.random.default_rng(0)
    return {
        "image": rng.uniform(-1, 1, (n, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


def _run(family, state, steps=1):
    fn = jax.jit(
        lambda s, b, k: step.train_step(s, b, k, {"ema_decay": 0.9}, family=family)
    )
    for _ in range(steps):
        state, metrics = fn(state, _batch(), jax.random.key(1))
    return state, metrics


def _same(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


@pytest.mark.parametrize("phase", ["disc", "gen"])
def test_each_phase_updates_only_its_own_role(phase):
    config, family = _family()
    only = Family(family.init, {phase: family.losses[phase]}, family.sample)
    state = _state(config, family)
    new, _ = _run(only, state)
    other = "gen" if phase == "disc" else "disc"
    assert _same(new.params[other], state.params[other])
    assert not _same(new.params[phase], state.params[phase])
    # Only the disc phase advances the spectral-norm vectors (non-trainable state).
    moved = not _same(new.params["disc_spectral"], state.params["disc_spectral"])
    assert moved == (phase == "disc")


def test_losses_match_hand_computed_values():
    real = jnp.array([1.0, -0.5])
    fake = jnp.array([0.5, -2.0])

    def sp(v):  # softplus
        return math.log1p(math.exp(v))

    ns = ((sp(-1.0) + sp(0.5)) + (sp(0.5) + sp(-2.0))) / 2
    cases = {
        "non_saturating": (ns, (sp(-0.5) + sp(2.0)) / 2),
        "hinge": ((0.0 + 1.5 + 1.5 + 0.0) / 2, 0.75),
        "wgan_gp": (((0.5 - 1.0) + (-2.0 + 0.5)) / 2, 0.75),
    }
    for kind, (want_d, want_g) in cases.items():
        got_d = gan.disc_loss_from_scores(kind, real, fake)
        np.testing.assert_allclose(got_d, want_d, rtol=1e-6, err_msg=kind)
        got_g = gan.gen_loss_from_scores(kind, fake)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-6, err_msg=kind)
    with pytest.raises(ValueError, match="gan.loss"):
        gan.disc_loss_from_scores("least_squares", real, fake)


def test_r1_penalty_matches_finite_differences():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 2, 2, 1)).astype(np.float32)
    x = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)

    def critic(x_BHWC):  # smooth and nonlinear, one score per example
        return jnp.sum(jnp.sin(a * x_BHWC) + 0.5 * x_BHWC**2, axis=(1, 2, 3))

    eps = 1e-2
    grads = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        dx = np.zeros_like(x)
        dx[idx] = eps
        grads[idx] = (critic(x + dx)[idx[0]] - critic(x - dx)[idx[0]]) / (2 * eps)
    want = np.mean(np.sum(grads**2, axis=(1, 2, 3)))
    np.testing.assert_allclose(gan.r1_penalty(critic, x), want, rtol=1e-3)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    w = jnp.full((1, 2, 2, 1), 0.25)  # ||w|| = 0.5 -> (0.5 - 1)^2 = 0.25

    def critic(x_BHWC):
        return jnp.sum(w * x_BHWC, axis=(1, 2, 3))

    real, fake = jnp.ones((4, 2, 2, 1)), -jnp.ones((4, 2, 2, 1))
    gp = gan.gradient_penalty(critic, real, fake, jax.random.key(0))
    np.testing.assert_allclose(gp, 0.25, rtol=1e-5)


def test_generator_updates_every_disc_steps_and_metrics_average_per_update():
    config, family = _family(disc_steps=2)
    state = _state(config, family)
    s1, m1 = _run(family, state, steps=1)  # step 0: disc only
    assert _same(s1.params["gen"], state.params["gen"])
    assert float(m1["gen/updates"]) == 0.0 and float(m1["gen/loss"]) == 0.0
    s2, m2 = _run(family, s1, steps=1)  # step 1: disc, then gen
    assert not _same(s2.params["gen"], s1.params["gen"])
    assert float(m2["gen/updates"]) == 1.0 and "disc/updates" not in m2
    # Reported as is on update steps (the loop averages over updates only):
    # recompute it with the step's own key and params.
    key = jax.random.fold_in(jax.random.key(1), 1)
    key, _ = jax.random.split(key)  # the disc phase's
    _, gen_key = jax.random.split(key)
    params = {**s2.params, "gen": s1.params["gen"]}  # disc already updated
    loss, _ = jax.jit(family.losses["gen"])(params, _batch(), gen_key)
    np.testing.assert_allclose(m2["gen/loss"], loss, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": "non_saturating", "r1_gamma": 1.0, "r1_every": 1},
        pytest.param(
            {"loss": "non_saturating", "r1_gamma": 1.0, "r1_every": 2},
            marks=pytest.mark.slow,
        ),
        pytest.param({"loss": "wgan_gp"}, marks=pytest.mark.slow),
    ],
)
def test_loss_variants_train_and_report_their_penalties(overrides):
    config, family = _family(**overrides)
    expected = {"disc", "gen"} | (
        {"disc/r1"} if overrides.get("r1_every") == 2 else set()
    )
    assert set(family.losses) == expected
    state, metrics = _run(family, _state(config, family), steps=2)
    assert int(state.step) == 2
    assert all(np.isfinite(float(v)) for v in metrics.values())
    key = {"wgan_gp": "disc/gp"}.get(overrides["loss"], "disc/r1")
    if overrides.get("r1_every") == 2:
        key = "disc/r1/r1"
    assert float(metrics[key]) > 0


def test_samples_cycle_through_classes_in_range():
    config, family = _family()
    state = _state(config, family)
    images = jax.jit(family.sample, static_argnums=2)(
        state.ema_params, jax.random.key(0), 12
    )
    assert images.shape == (12, 8, 8, 1)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
