"""LoRA on any single-model family: step 0 is the base model, only adapters train
(optimizer state and EMA adapter-sized), the merged weights give the adapted
model's outputs, and targets that match nothing (or a convolution) are refused."""

import jax
import numpy as np
import pytest

from configs import ddpm_digits, lm_pydoc
from gen_jax import build, data
from gen_jax.families import lora


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _setup(config):
    s = build.setup(config)
    batches = data.make_train(config.data, batch_size=16, mesh=s.mesh)
    return s, s.init(s.init_key), batches


def _check(config):
    """Step 0 equals the base; two steps move adapters only; merge == adapted."""
    s, state, batches = _setup(config)
    base_family, _ = s.family.deployed(state.params)  # the plain family
    batch, key = next(batches), jax.random.key(3)
    base = {"model": state.params[lora.BASE]["model"]}
    # Jitted (op by op, a UNet compiles every primitive separately); the
    # adapted and the base program compute the same numbers at step 0.
    adapted_loss = jax.jit(lambda p: s.family.losses["model"](p, batch, key)[0])
    base_loss = jax.jit(lambda p: base_family.losses["model"](p, batch, key)[0])
    np.testing.assert_array_equal(
        jax.jit(s.family.apply)(state.params, batch, key),
        jax.jit(base_family.apply)(base, batch, key),
    )
    np.testing.assert_array_equal(adapted_loss(state.params), base_loss(base))

    adapters = _bytes(state.params["model"])
    assert set(state.ema_params) == {"model"}  # no EMA copy of the frozen base
    assert _bytes(state.ema_params) == adapters
    # AdamW's two moments per adapter, plus scalar counts.
    assert 2 * adapters <= _bytes(state.opt_state) <= 2 * adapters + 64
    assert adapters < _bytes(state.params[lora.BASE]) / 4

    frozen = jax.device_get(state.params[lora.BASE])
    for _ in range(2):
        state, _ = s.train_step(state, next(batches), s.step_key)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(state.params[lora.BASE])):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert any(
        np.abs(np.asarray(b)).max() > 0 for b in jax.tree.leaves(state.params["model"])
    )

    # The adapted loss (interception) equals the base loss on merged weights.
    scale = config.lora.alpha / config.lora.rank
    merged = lora.merge(state.params, scale)
    np.testing.assert_allclose(adapted_loss(state.params), base_loss(merged), rtol=1e-5)
    return state


def test_lora_on_the_transformer():
    config = lm_pydoc.get_config("smoke")
    config.lora.update(rank=4, targets=r"block_\d+/(q|v)", target_axes=("mlp",))
    state = _check(config)
    adapted = set(state.params["model"]["block_0"])
    assert adapted == {"q", "v", "up", "down"}  # by regex and by logical axis


@pytest.mark.slow
def test_lora_on_the_diffusion_unet_attention():
    config = ddpm_digits.get_config("smoke")
    # One level, attention at 8x8: the adapters' path at the lowest compile cost.
    config.model.update(channel_mults=(1,), attention_resolutions=(8,))
    config.lora.update(
        rank=2, targets=r".*AttentionBlock_\d+/Dense_\d+", base_dtype="bfloat16"
    )
    state = _check(config)
    for x in jax.tree.leaves(state.params[lora.BASE]):
        assert x.dtype == np.dtype("bfloat16")


@pytest.mark.parametrize(
    "targets, words",
    [
        ("nothing_matches", "match no kernel; kernels: "),
        (r"ResBlock_0/Conv_0", "a Conv;"),
    ],
)
def test_targets_that_match_nothing_or_a_convolution_are_refused(targets, words):
    config = ddpm_digits.get_config("smoke")
    config.lora.update(rank=2, targets=targets)
    with pytest.raises(ValueError, match=words):
        build.setup(config)
