import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import data, families, text
from gen_jax.families import vae
from gen_jax.models import precision
from tests import helpers


def test_kl_is_zero_when_posterior_equals_prior():
    kl = vae.gaussian_kl(jnp.zeros((3, 5)), jnp.zeros((3, 5)))
    np.testing.assert_array_equal(kl, np.zeros(3))
    assert float(vae.gaussian_kl(jnp.ones((1, 2)), jnp.zeros((1, 2)))[0]) == 1.0


def test_reconstruction_nll_matches_hand_values():
    x = jnp.full((1, 1, 1, 1), 1.0)  # grey level 1 -> Bernoulli target 1
    nll = vae.reconstruction_nll(jnp.zeros((1, 1, 1, 1)), x, "bernoulli", 0.1)
    np.testing.assert_allclose(nll, [math.log(2)], rtol=1e-6)
    nll = vae.reconstruction_nll(jnp.zeros((1, 1, 1, 1)), x, "gaussian", 0.5)
    want = 0.5 * (1 / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(nll, [want], rtol=1e-6)
    with pytest.raises(ValueError, match="likelihood"):
        vae.reconstruction_nll(x, x, "poisson", 0.1)


def test_vae_loss_metrics_are_consistent(smoke_config):
    family = families.make(smoke_config)
    batch = {"image": jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=-1)}
    params = jax.jit(family.init)(jax.random.key(0), batch)
    loss, aux = jax.jit(family.losses["model"])(params, batch, jax.random.key(2))
    np.testing.assert_allclose(aux["nelbo"], aux["nll"] + aux["kl"], rtol=1e-6)
    np.testing.assert_allclose(
        aux["bits_per_dim"], aux["nelbo"] / (64 * math.log(2)), rtol=1e-6
    )
    np.testing.assert_allclose(loss, aux["nelbo"], rtol=1e-6)  # beta = 1


def test_vae_samples_and_reconstructions_are_images(smoke_config):
    family = families.make(smoke_config)
    batch = {"image": jnp.zeros((4, 8, 8, 1))}
    params = jax.jit(family.init)(jax.random.key(0), batch)
    samples = jax.jit(family.sample, static_argnums=2)(params, jax.random.key(1), 6)
    recons = jax.jit(family.reconstruct)(params, batch, jax.random.key(1))
    for images, n in ((samples, 6), (recons, 4)):
        assert images.shape == (n, 8, 8, 1)
        assert float(images.min()) >= -1 and float(images.max()) <= 1


def test_vae_loss_falls_when_overfitting_one_batch(smoke_config):
    smoke_config.optim.model.warmup_steps = 0
    smoke_config.optim.model.lr = 3e-3
    smoke_config.train.num_steps = 150
    family = families.make(smoke_config)
    # Binary pixels: the Bernoulli NLL can approach 0 (grey levels have a floor).
    x = jax.random.bernoulli(jax.random.key(1), 0.5, (8, 8, 8, 1))
    batch = {"image": jnp.where(x, 1.0, -1.0)}
    params = jax.jit(family.init)(jax.random.key(0), batch)
    losses = helpers.overfit_losses(smoke_config, family, params, batch, 150)
    assert losses[-1] < 0.9 * losses[0], (losses[0], losses[-1])


def test_unknown_family_is_named(smoke_config):
    smoke_config.family = "vea"
    with pytest.raises(ValueError, match="unknown config.family 'vea'"):
        families.make(smoke_config)


@pytest.mark.parametrize(
    "name", ["vae_digits", "ddpm_digits", "lm_pydoc", "gan_digits", "classifier_digits"]
)
def test_every_family_inits_applies_and_scores_a_batch(name):
    """The functional API a notebook uses, jitted: init, apply, each loss, sample."""
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    family = families.make(config)
    batch = next(iter(data.local_batches(config.data, batch_size=4, index=0, count=1)))
    params = jax.jit(family.init)(jax.random.key(0), batch)
    apply = jax.jit(family.apply)
    out = apply(params, batch, jax.random.key(1))
    if data.is_text(config.data):  # next-token logits
        vocab = text.make_tokenizer(config.data).vocab_size
        assert out.shape == (4, config.data.seq_len - 1, vocab)
    elif config.family == "vae":  # decoder output for a posterior sample
        assert out.shape == batch["image"].shape
    elif config.family == "diffusion":  # denoiser output (2C: learned variance)
        assert out.shape[:3] == batch["image"].shape[:3]
    elif config.family == "gan":  # discriminator scores
        assert out.shape == (4,)
    else:
        assert out.shape == (4, config.data.num_classes)
    np.testing.assert_array_equal(out, apply(params, batch, jax.random.key(1)))
    for phase, loss_fn in family.losses.items():
        loss, _ = jax.jit(loss_fn)(params, batch, jax.random.key(2))
        assert loss.shape == () and np.isfinite(loss), phase
    if family.sample is not None:
        samples = jax.jit(family.sample, static_argnums=2)(params, jax.random.key(3), 2)
        assert samples.shape[0] == 2 and np.all(np.isfinite(samples))


# The three kinds of network: the UNet, the transformer, the GAN's conv nets
# (the VAE's bfloat16 forward: tests/test_models.py).
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("ddpm_digits", marks=pytest.mark.slow),
        "lm_pydoc",
        pytest.param("gan_digits", marks=pytest.mark.slow),
    ],
)
def test_a_bfloat16_step_is_finite_and_close_to_float32(name):
    """model.dtype=bfloat16 computes in bfloat16 (the program has bf16 ops)
    while params, losses and gradients stay float32; each phase's loss is
    within a few % of float32's on the same params and batch."""
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    batch = next(iter(data.local_batches(config.data, batch_size=4, index=0, count=1)))
    f32 = families.make(config)
    params = jax.jit(f32.init)(jax.random.key(0), batch)
    config.model.dtype = "bfloat16"
    bf16 = families.make(config)
    key = jax.random.key(2)
    for phase, loss_fn in bf16.losses.items():
        assert "bf16" in str(jax.make_jaxpr(loss_fn)(params, batch, key)), phase
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        (loss, _), grads = grad_fn(params, batch, key)
        want, _ = jax.jit(f32.losses[phase])(params, batch, key)
        assert loss.dtype == jnp.float32 and np.isfinite(loss), phase
        for g in jax.tree.leaves(grads):
            assert g.dtype == jnp.float32 and np.all(np.isfinite(g)), phase
        np.testing.assert_allclose(loss, want, rtol=0.03, atol=0.01, err_msg=phase)


def _bf16_lm_loss():
    """lm_pydoc:smoke's config (model.dtype bfloat16), its bf16 loss, float32
    params and a batch."""
    config = importlib.import_module("configs.lm_pydoc").get_config("smoke")
    batch = next(iter(data.local_batches(config.data, batch_size=4, index=0, count=1)))
    params = jax.jit(families.make(config).init)(jax.random.key(0), batch)
    config.model.dtype = "bfloat16"
    (loss_fn,) = families.make(config).losses.values()
    return config, loss_fn, params, batch


def test_a_bfloat16_lm_step_asks_for_bf16_dots_forward_and_backward(monkeypatch):
    """Every contraction of the LM's bf16 loss and gradient (projections,
    attention, logits; the forward, and the backward's input and weight
    gradients) is bf16 x bf16 accumulated in float32 (precision.einsum's
    custom_vjp): JAX's own transpose would make the backward's dots float32.
    And XLA:CPU keeps the projections' forward and input-gradient dots bf16
    (it upcasts the batched and weight-gradient ones it has no bf16 kernel
    for: the README's speed section). Native dots asked for, whatever this
    host's CPU (one without bf16 instructions emulates them: next test)."""
    import re

    monkeypatch.setenv("GEN_JAX_NARROW_DOTS", "native")
    config, loss_fn, params, batch = _bf16_lm_loss()
    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    lowered = grad_fn.lower(params, batch, jax.random.key(2))
    dots = re.findall(r"stablehlo.dot_general .*: \((.*)\) -> (.*)", lowered.as_text())
    layer = config.model.num_layers
    # q k v out up down, the two attention products; the logits; 3 each
    assert len(dots) == layer * (6 + 2) * 3 + 3
    for operands, result in dots:
        assert operands.count("bf16") == 2 and "f32" in result, (operands, result)
    compiled = lowered.compile().as_text()
    types = dict(re.findall(r"%(\S+) = (\w+)\[", compiled))
    kept = [
        (types[a], types[b])
        for a, b in re.findall(r"\bdot\(%([^,]+), %([^)]+)\)", compiled)
    ]
    assert kept.count(("bf16", "bf16")) >= layer * 6 * 2, kept


def test_emulated_bf16_dots_are_float32_dots_with_the_same_numbers(monkeypatch):
    """On a CPU without bf16 dot instructions, precision.einsum rounds the
    operands to bf16 and runs float32 dots (faster there): no bf16 dot in the
    program, the same loss and gradients as native bf16 dots up to summation
    order; a bad $GEN_JAX_NARROW_DOTS is refused in one line."""
    import re

    _, loss_fn, params, batch = _bf16_lm_loss()
    out = {}
    for mode in precision.NARROW_DOTS:
        monkeypatch.setenv("GEN_JAX_NARROW_DOTS", mode)
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        text = grad_fn.lower(params, batch, jax.random.key(2)).as_text()
        dots = re.findall(r"stablehlo.dot_general .*: \((.*)\) -> (.*)", text)
        out[mode] = (grad_fn(params, batch, jax.random.key(2)), dots)
    ((want, _), want_grads), _ = out["native"]
    ((loss, _), grads), dots = out["emulated"]
    assert dots and all("bf16" not in o for o, _ in dots), dots
    np.testing.assert_allclose(loss, want, rtol=1e-3)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        # bf16-rounded products summed in another order: a relative error of
        # each gradient's norm well under bf16's 2^-8 per element
        assert np.linalg.norm(a - b) <= 0.01 * np.linalg.norm(b), a.shape
    monkeypatch.setenv("GEN_JAX_NARROW_DOTS", "fast")
    with pytest.raises(ValueError, match="GEN_JAX_NARROW_DOTS='fast'; use one of"):
        precision.narrow_dots(jnp.bfloat16)
