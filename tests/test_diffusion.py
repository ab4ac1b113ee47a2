import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, ddpm_digits, fm_digits
from gen_jax import families
from gen_jax.families import diffusion, diffusion_objectives, samplers
from gen_jax.families import gaussian_diffusion as gd
from tests import helpers


@pytest.fixture
def config():
    """ddpm_digits:smoke on fm_digits:smoke's one-layer DiT: these tests check
    the diffusion math, and compiling the network dominates their time (a DiT's
    gradient compiles in about half a one-level UNet's; the smoke UNet trains
    end to end in the CLI run, and tests/test_models.py checks it alone)."""
    c = ddpm_digits.get_config("smoke")
    c.model = fm_digits.get_config("smoke").model
    return c


def _under(config, objective: str, **updates) -> None:
    """Switches `config` (a ddpm_digits:smoke one) to `objective`; DDPM's keys
    that the smoke shrink set go back to their defaults under another one,
    which refuses them set."""
    if objective != "ddpm":
        ddpm = diffusion_objectives.OBJECTIVES["ddpm"].keys
        config.diffusion.update({k: base.diffusion_defaults()[k] for k in ddpm})
    config.diffusion.update(objective=objective, **updates)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_invariants(kind):
    s = gd.make_schedule(kind, 1000)
    abar = np.asarray(s.alphas_cumprod, np.float64)
    assert np.all(np.diff(abar) < 0) and abar[0] < 1 and abar[-1] > 0
    assert np.all((np.asarray(s.betas) > 0) & (np.asarray(s.betas) < 1))
    assert abar[0] > 0.9998 and abar[-1] < 1e-4
    if kind == "cosine":  # f(t)/f(0) with s = 0.008 (Nichol & Dhariwal eq. 17)
        want0 = (
            np.cos((0.001 + 0.008) / 1.008 * np.pi / 2) ** 2
            / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
        )
        np.testing.assert_allclose(abar[0], want0, rtol=1e-6)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_prediction_conversions_round_trip(kind):
    s = gd.make_schedule("cosine", 1000)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.uniform(k1, (16, 4, 4, 3), minval=-1, maxval=1)
    eps = jax.random.normal(k2, x0.shape)
    t_B = jax.random.randint(k3, (16,), 0, 1000)
    x_t = gd.q_sample(s, x0, t_B, eps)
    got_x0, got_eps = gd.to_x0_eps(s, kind, x_t, t_B, gd.target(s, kind, x0, t_B, eps))
    np.testing.assert_allclose(got_eps, eps, atol=2e-3)
    np.testing.assert_allclose(got_x0, x0, atol=2e-3, rtol=1e-3)


def test_vlb_pieces_are_proper():
    mean = jnp.full((1, 1, 1, 1), 0.1)
    np.testing.assert_allclose(gd.normal_kl(mean, 0.3, mean, 0.3), 0.0, atol=1e-7)
    # The discretised decoder is a distribution over the 256 levels.
    levels = jnp.linspace(-1, 1, 256).reshape(256, 1, 1, 1)
    probs = jnp.exp(-gd.discretized_gaussian_nll(levels, mean, jnp.log(0.05)))
    np.testing.assert_allclose(jnp.sum(probs), 1.0, rtol=1e-5)


def test_vlb_of_an_oracle_denoiser():
    # With x0_pred = x0 every KL term (t > 0) vanishes, and L_0 is exactly the
    # mass the decoder N(x0, beta~_1) leaves outside the 1/127.5-wide bin.
    s = gd.make_schedule("linear", 1000)
    x0 = (
        jnp.round(jax.random.uniform(jax.random.key(0), (4, 4, 4, 1)) * 255) / 127.5 - 1
    )
    for t in (1, 10, 500, 999):
        t_B = jnp.full((4,), t)
        x_t = gd.q_sample(s, x0, t_B, jax.random.normal(jax.random.key(t), x0.shape))
        np.testing.assert_allclose(
            gd.vlb_term(s, "small", x0, x_t, t_B, x0), 0.0, atol=1e-4
        )
    z = (1 / 255) / float(jnp.sqrt(s.posterior_variance[1]))
    ndtr = jax.scipy.special.ndtr
    edge = (x0 < -0.999) | (x0 > 0.999)
    want = jnp.sum(
        jnp.where(edge, -jnp.log(ndtr(z)), -jnp.log(2 * ndtr(z) - 1)), axis=(1, 2, 3)
    )
    t_B = jnp.zeros((4,), jnp.int32)
    np.testing.assert_allclose(
        gd.vlb_term(s, "small", x0, x0, t_B, x0), want, rtol=1e-3
    )
    np.testing.assert_array_less(gd.prior_kl(s, x0), 1e-3)


def _setup(config):
    family = families.make(config)
    batch = {
        "image": jax.random.uniform(jax.random.key(1), (8, 8, 8, 1), minval=-1),
        "label": jnp.arange(8) % 10,
    }
    params = jax.jit(family.init)(jax.random.key(0), batch)  # not one compile per op
    return family, batch, params


@pytest.mark.slow  # the first tier keeps flow's one-image learning test
def test_loss_falls_when_overfitting_one_batch():
    # DDPM's eps loss on the smoke UNet (without attention): the one-layer DiT
    # of the other tests falls only to 0.82 of its start in these 200 steps.
    config = ddpm_digits.get_config("smoke")
    config.model.attention_resolutions = ()
    config.optim.model.update(warmup_steps=0, lr=3e-3)
    config.train.num_steps = 200
    family, batch, params = _setup(config)
    losses = helpers.overfit_losses(config, family, params, batch, 200)
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20]), (losses[:3], losses[-3:])


@pytest.mark.parametrize(
    "objective, most",
    [pytest.param("edm", 0.92, marks=pytest.mark.slow), ("flow", 0.7)],
)
def test_continuous_objectives_learn_a_one_image_dataset(config, objective, most):
    """The loss at fixed noise draws (64 of them) falls as the model learns
    one image. EDM's falls least: its preconditioning already gives the easy,
    linear part of the denoiser, and what is left at small sigma, the noise
    itself, is hard for a tiny UNet in 200 steps (measured: EDM 1.17 -> 0.97,
    flow 1.36 -> 0.68)."""
    _under(config, objective, sampler="euler")
    config.optim.model.update(warmup_steps=0, lr=3e-3)
    family = families.make(config)
    image = jax.random.uniform(jax.random.key(1), (1, 8, 8, 1), minval=-1)
    batch = {"image": jnp.broadcast_to(image, (8, 8, 8, 1)), "label": jnp.zeros(8, int)}
    params = jax.jit(family.init)(jax.random.key(0), batch)
    keys = jax.random.split(jax.random.key(7), 64)
    heldout = jax.jit(
        lambda p: jnp.mean(
            jax.vmap(lambda k: family.losses["model"](p, batch, k)[0])(keys)
        )
    )
    state = helpers.overfit_state(config, family, params, batch, 200)
    before, after = float(heldout(nn.unbox(params))), float(heldout(state.params))
    assert after < most * before, (before, after)


def _denoise_fn(config, params, labels):
    """The conditional model alone, as the samplers see it."""
    d = config.diffusion
    model = diffusion.make_model(config)
    s = gd.make_schedule(d.schedule, d.num_timesteps, d.beta_start, d.beta_end)

    def denoise(x_t, t_B):
        out = model.apply({"params": params["model"]}, x_t, t_B, labels)
        return gd.to_x0_eps(s, config.diffusion.prediction, x_t, t_B, out)

    return s, denoise


def test_ddim_eta0_is_deterministic_and_eta1_full_equals_ddpm(config):
    _, batch, params = _setup(config)
    s, denoise = _denoise_fn(config, params, batch["label"])
    x_T = jax.random.normal(jax.random.key(5), batch["image"].shape)
    keys = lambda seed: jax.random.split(jax.random.key(seed), len(x_T))
    a = samplers.ddim(s, denoise, x_T, keys(1), steps=7, eta=0.0)
    b = samplers.ddim(s, denoise, x_T, keys(2), steps=7, eta=0.0)
    np.testing.assert_array_equal(a, b)
    # DDIM with eta=1 on the full grid is the DDPM posterior-mean path with the
    # posterior variance, step for step (same noise draws).
    t = config.diffusion.num_timesteps
    full = samplers.ddim(s, denoise, x_T, keys(3), steps=t, eta=1.0)
    ddpm = samplers.ddpm(s, denoise, x_T, keys(3), variance="small")
    assert full.shape == ddpm.shape == x_T.shape
    np.testing.assert_allclose(full, ddpm, atol=5e-4)  # two float32 algebraic forms


def test_guidance_one_equals_conditional_model_and_does_not_recompile(config):
    _, batch, params = _setup(config)
    guided = jax.jit(diffusion.make(config).generate)
    labels = batch["label"]
    keys = jax.random.split(jax.random.key(7), len(labels))
    got = guided(params, keys, labels, np.ones(len(labels), np.float32))
    s, denoise = _denoise_fn(config, params, labels)
    noise_keys, sampler_keys = samplers.split_per_image(keys)
    x_T = jax.vmap(lambda k: jax.random.normal(k, batch["image"].shape[1:]))(noise_keys)
    want = samplers.ddim(
        s, denoise, x_T, sampler_keys, steps=config.diffusion.sample_steps, eta=0.0
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    guided(params, keys, labels, np.full(len(labels), 3.0, np.float32))
    guided(params, keys, labels, np.float32([0.0, 2.0] * (len(labels) // 2)))
    assert guided._cache_size() == 1


def test_an_image_does_not_depend_on_what_it_is_batched_with(config):
    """Per-image keys, labels and guidance (what the server's micro-batches
    rely on): the first images of a larger batch with other seeds, labels and
    guidance equal the same images generated alone."""
    _, _, params = _setup(config)
    family = diffusion.make(config)
    generate = jax.jit(family.generate)
    keys = jax.random.split(jax.random.key(3), 4)
    labels, guidance = jnp.asarray([1, 2, 3, 4]), jnp.asarray([2.0, 1.0, 3.0, 0.5])
    alone = generate(params, keys[:1], labels[:1], guidance[:1])
    batched = generate(params, keys, labels, guidance)
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)


@pytest.mark.parametrize(
    "objective, name",
    [(o.name, n) for o in diffusion_objectives.OBJECTIVES.values() for n in o.samplers],
)
def test_every_sampler_returns_finite_images_in_range(config, objective, name):
    _under(config, objective, sampler=name, sample_steps=3)
    _, _, params = _setup(config)
    images = jax.jit(families.make(config).sample, static_argnums=2)(
        params, jax.random.key(0), 6
    )
    assert images.shape == (6, 8, 8, 1)
    assert np.isfinite(images).all() and images.min() >= -1 and images.max() <= 1


def test_guidance_interval_is_traced_and_gates_guidance(config):
    """The interval (EDM-equivalent sigmas) is an argument: changing it does
    not recompile; an interval holding no step's noise level gives the
    conditional model alone (guidance 1), one holding all gives full guidance."""
    _under(config, "edm", sampler="heun", sample_steps=3)
    _, batch, params = _setup(config)
    # Off the zero-initialised output layer, so labels change the output.
    params = helpers.perturbed(nn.unbox(params), scale=0.5, seed=4)
    generate = jax.jit(families.make(config).generate)
    labels = batch["label"][:4]
    keys = jax.random.split(jax.random.key(2), 4)
    strong, one = np.full(4, 4.0, np.float32), np.ones(4, np.float32)
    everywhere = generate(params, keys, labels, strong, np.float32([0.0, 1e9]))
    nowhere = generate(params, keys, labels, strong, np.float32([100.0, 200.0]))
    conditional = generate(params, keys, labels, one, np.float32([0.0, 1e9]))
    assert generate._cache_size() == 1
    # The same arithmetic (weight 1), so bitwise equal; guidance moves pixels
    # (little here: a random tiny UNet, most pixels clipped).
    np.testing.assert_array_equal(nowhere, conditional)
    assert np.abs(everywhere - conditional).max() > 1e-5


def test_an_objective_refuses_another_objectives_settings(config):
    for update, words in [
        ({"objective": "edm", "sampler": "ddim"}, "samples objective 'ddpm'"),
        (
            {"objective": "flow", "loss": "vlb"},
            (
                "config.diffusion.loss='vlb' is read only by objective 'ddpm', not "
                "'flow': leave it at 'simple' or set config.diffusion.objective='ddpm'"
            ),
        ),
        ({"objective": "flow", "sampler": "heun", "churn": 10.0}, "churn=10.0"),
        ({"objective": "edm", "churn": 10.0, "sampler": "dpm_solver_pp_2m"}, "churn"),
        ({"objective": "ddpm", "sampler": "ddim", "t_std": 2.0}, "objective 'flow'"),
        ({"objective": "edm", "guidance_interval": (2.0, 1.0)}, "lo < hi"),
    ]:
        c = config.copy_and_resolve_references()
        _under(c, **{"sampler": "heun", **update})
        with pytest.raises(ValueError) as e:
            diffusion.make(c)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_the_records_own_every_key_but_the_shared_ones_with_bases_defaults():
    """Each config.diffusion key is shared or one objective's, and a record's
    defaults are configs/base.py's (what it requires of other objectives)."""
    defaults = base.diffusion_defaults()
    shared = {
        "objective",
        "conditional",
        "label_dropout",
        "guidance_scale",
        "sampler",
        "sample_steps",
        "guidance_interval",
    }
    owned = [k for o in diffusion_objectives.OBJECTIVES.values() for k in o.keys]
    assert len(owned) == len(set(owned)) and set(owned) == set(defaults) - shared
    for objective in diffusion_objectives.OBJECTIVES.values():
        assert objective.keys == {k: defaults[k] for k in objective.keys}


def test_a_run_written_before_objectives_opens_as_ddpm(config):
    """config.json of a run from before `diffusion.objective` (and the keys
    added with it) builds the same DDPM family."""
    old = config.diffusion.to_dict()
    for o in ("edm", "flow"):
        for key in diffusion_objectives.OBJECTIVES[o].keys:
            del old[key]
    del old["objective"], old["guidance_interval"]
    c = config.copy_and_resolve_references()
    c.diffusion = old
    with pytest.raises(ValueError, match="has no objective"):
        diffusion.make(c)
    families.migrate(c)  # what checkpoint.load_config does
    assert c.diffusion.objective == "ddpm"
    assert diffusion.make(c).images.sampler == diffusion.make(config).images.sampler


def test_heldout_bound_is_positive_and_consistent(config):
    family, batch, params = _setup(config)
    metrics = family.evaluate(params, batch, jax.random.key(0))
    np.testing.assert_allclose(
        metrics["model/bits_per_dim"],
        metrics["model/nelbo"] / (64 * np.log(2)),
        rtol=1e-5,
    )
    assert float(metrics["model/nelbo"]) > 0


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_vlb_loss_and_other_targets_give_finite_gradients(config, prediction):
    config.diffusion.update(loss="vlb", prediction=prediction, variance="large")
    family, batch, params = _setup(config)
    grad_fn = jax.jit(jax.value_and_grad(family.losses["model"], has_aux=True))
    (loss, _), grads = grad_fn(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_an_edm_run_written_with_ddpm_keys_set_still_opens(tmp_path):
    """config.json of an edm smoke run from before the records (the smoke
    shrink then set DDPM's T=40 for every objective): refused as a new config,
    opened as a run's own (checkpoint.load_config migrates it)."""

    from configs import edm_digits
    from gen_jax import checkpoint, families

    config = edm_digits.get_config("smoke")
    config.diffusion.update(num_timesteps=40, eval_timesteps=4)
    with pytest.raises(ValueError, match="num_timesteps=40 is read only by"):
        families.make(config)
    (tmp_path / "config.json").write_text(config.to_json())
    opened = checkpoint.load_config(str(tmp_path))
    assert opened.diffusion.num_timesteps == base.diffusion_defaults().num_timesteps
    assert families.make(opened).images.sampler["objective"] == "edm"
