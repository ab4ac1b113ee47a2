import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models import MODELS
from tests import helpers


def _vae(**kw):
    args = {
        "channels": (8, 16),
        "kernel_size": 3,
        "hidden": 16,
        "latents": 4,
        "image_size": 8,
        "out_channels": 1,
    }
    return MODELS["conv_vae"](**(args | kw))


@pytest.mark.parametrize("use_jit", [False, True])
def test_conv_vae_shapes_and_finite(use_jit):
    model = _vae()
    x_BHWC = jnp.ones((2, 8, 8, 1))
    z_BZ = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x_BHWC, z_BZ)["params"]
    apply = jax.jit(model.apply) if use_jit else model.apply
    (mean_BZ, logvar_BZ), out_BHWC = apply({"params": params}, x_BHWC, z_BZ)
    assert mean_BZ.shape == logvar_BZ.shape == (2, 4)
    assert out_BHWC.shape == (2, 8, 8, 1)
    assert out_BHWC.dtype == jnp.float32
    assert all(np.isfinite(a).all() for a in (mean_BZ, logvar_BZ, out_BHWC))


def test_conv_vae_bf16_compute_keeps_f32_params_and_outputs():
    model = _vae(dtype="bfloat16")
    params = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), jnp.ones((1, 4)))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    _, out = model.apply(params, jnp.ones((1, 8, 8, 1)), jnp.ones((1, 4)))
    assert out.dtype == jnp.float32


def test_conv_vae_rejects_indivisible_image_size():
    with pytest.raises(ValueError, match="not divisible"):
        _vae(image_size=10).init(
            jax.random.key(0), jnp.ones((1, 10, 10, 1)), jnp.ones((1, 4))
        )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_unet_shapes_finite_and_float32_params(dtype):
    model = MODELS["unet"](
        out_channels=3,
        channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        dropout=0.1,
        num_classes=10,
        norm_groups=8,
        dtype=dtype,
    )
    x_BHWC = jnp.ones((2, 8, 8, 3))
    t_B, label_B = jnp.array([0, 999]), jnp.array([3, 10])  # 10: the null label
    params = jax.jit(model.init)(jax.random.key(0), x_BHWC, t_B, label_B)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out = jax.jit(model.apply)({"params": params}, x_BHWC, t_B, label_B)
    assert out.shape == (2, 8, 8, 3) and out.dtype == jnp.float32
    assert np.isfinite(out).all()
    if dtype == "float32":  # with dropout, once
        train = jax.jit(functools.partial(model.apply, train=True))
        rngs = {"dropout": jax.random.key(1)}
        train_out = train({"params": params}, x_BHWC, t_B, label_B, rngs=rngs)
        assert train_out.shape == out.shape and np.isfinite(train_out).all()


def _dit(**kw):
    args = {
        "out_channels": 2,
        "patch_size": 2,
        "num_layers": 2,
        "num_heads": 2,
        "embed_dim": 16,
        "num_classes": 10,
    }
    return MODELS["dit"](**(args | kw))


def test_dit_blocks_start_as_the_identity_and_the_output_at_zero():
    """adaLN-Zero: every block returns its input exactly at init (the LM's
    sub-layers under the DiT's modulation), so the DiT predicts 0; trained
    params move both."""
    from gen_jax.models import attention, dit

    block = dit.DiTBlock(_dit().block_config())
    k1, k2 = jax.random.split(jax.random.key(0))
    x_BLD, cond_BD = jax.random.normal(k1, (2, 5, 16)), jax.random.normal(k2, (2, 16))
    args = (x_BLD, None, attention.full_mask(5), cond_BD)
    params = jax.jit(block.init)(jax.random.key(1), *args)
    apply = jax.jit(block.apply)
    np.testing.assert_array_equal(apply(params, *args)[0], x_BLD)
    assert not np.allclose(apply(helpers.perturbed(params), *args)[0], x_BLD)

    model = _dit()
    x_BHWC = jax.random.normal(k1, (2, 8, 8, 2))
    t_B, label_B = jnp.array([3.0, 900.0]), jnp.array([3, 10])
    params = jax.jit(model.init)(jax.random.key(0), x_BHWC, t_B, label_B)
    out = jax.jit(model.apply)(params, x_BHWC, t_B, label_B)
    assert out.shape == x_BHWC.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)
    moved = jax.jit(model.apply)(helpers.perturbed(params), x_BHWC, t_B, label_B)
    assert np.isfinite(moved).all() and not np.allclose(moved, 0.0)


def test_dit_scanned_stacks_its_blocks_and_computes_the_same():
    from gen_jax.models import transformer

    x_BHWC = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
    t_B, label_B = jnp.array([3.0, 900.0]), jnp.array([3, 10])
    plain, scanned = _dit(), _dit(scan_layers=True)
    params = helpers.perturbed(
        jax.jit(plain.init)(jax.random.key(0), x_BHWC, t_B, label_B)
    )
    params = jax.tree.map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value")
    )
    stacked = {"params": transformer.stack_layers(params["params"], 2)}
    assert jax.tree.leaves(stacked["params"]["blocks"])[0].shape[0] == 2
    want = jax.jit(plain.apply)(params, x_BHWC, t_B, label_B)
    got = jax.jit(scanned.apply)(stacked, x_BHWC, t_B, label_B)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_dit_rejects_an_image_its_patches_do_not_tile():
    with pytest.raises(ValueError, match="divides by model.patch_size=3"):
        _dit(patch_size=3).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 2)), jnp.zeros((1,)), None
        )
