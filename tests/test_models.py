import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models import MODELS


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
    if dtype == "float32":  # without jit too, once: op by op is slow to dispatch
        train_out = model.apply(
            {"params": params},
            x_BHWC,
            t_B,
            label_B,
            train=True,
            rngs={"dropout": jax.random.key(1)},
        )
        assert train_out.shape == out.shape and np.isfinite(train_out).all()
