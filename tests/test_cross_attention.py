"""Text conditioning in the denoisers (block.cross_attention in the DiT and the
UNet): masks, the null caption, the zero start, and "none" left as it was."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models import MODELS
from tests import helpers

# One worker runs this module, so the models' programs compile once.
pytestmark = pytest.mark.xdist_group("cross_attention")
TEXT_DIM = 12
_MODELS = {
    "dit": {
        "out_channels": 3,
        "patch_size": 2,
        "num_layers": 2,
        "num_heads": 2,
        "embed_dim": 16,
        "num_classes": 10,
    },
    "unet": {
        "out_channels": 3,
        "channels": 16,
        "channel_mults": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (4,),
        "num_classes": 10,
        "norm_groups": 8,
        "text_heads": 2,
    },
}


def _model(name: str, **kw):
    return MODELS[name](**(_MODELS[name] | kw))


def _captions(length: int, seed: int):
    """Two rows of 3 and 2 tokens, padded with random features to `length`."""
    rng = np.random.default_rng(seed)
    text_BSD = rng.standard_normal((2, length, TEXT_DIM)).astype(np.float32)
    text_BSD[:, :3] = np.random.default_rng(0).standard_normal((2, 3, TEXT_DIM))
    mask_BS = np.zeros((2, length), bool)
    mask_BS[0, :3], mask_BS[1, :2] = True, True
    return jnp.asarray(text_BSD), jnp.asarray(mask_BS)


def _unboxed(params):
    return jax.tree.map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value")
    )


@pytest.fixture(scope="module", params=sorted(_MODELS))
def text_model(request):
    """(name, its init params, perturbed params, jitted apply, x, t, label)."""
    model = _model(request.param, text_conditioning="cross", text_dim=TEXT_DIM)
    x_BHWC = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    t_B, label_B = jnp.array([3.0, 900.0]), jnp.array([3, 10])
    text_BSD, mask_BS = _captions(4, seed=1)
    params = _unboxed(
        jax.jit(model.init)(jax.random.key(0), x_BHWC, t_B, label_B, text_BSD, mask_BS)
    )
    apply = jax.jit(model.apply)
    moved = helpers.perturbed(params)
    return request.param, params, moved, apply, x_BHWC, t_B, label_B


def test_text_model_shapes_finite_and_float32_params(text_model):
    _, params, moved, apply, x_BHWC, t_B, label_B = text_model
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    for p in (params, moved):
        out = apply(p, x_BHWC, t_B, label_B, *_captions(4, seed=1))
        assert out.shape == x_BHWC.shape and out.dtype == jnp.float32
        assert np.isfinite(out).all()


def test_padding_never_changes_an_output(text_model):
    """The same captions padded to 4 and to 8 tokens (the padding random
    features, masked) give the same outputs."""
    _, _, moved, apply, x_BHWC, t_B, label_B = text_model
    short = apply(moved, x_BHWC, t_B, label_B, *_captions(4, seed=1))
    other_padding = apply(moved, x_BHWC, t_B, label_B, *_captions(4, seed=2))
    long = apply(moved, x_BHWC, t_B, label_B, *_captions(8, seed=3))
    np.testing.assert_array_equal(other_padding, short)
    np.testing.assert_allclose(long, short, atol=1e-5, rtol=1e-5)


def test_null_caption_is_finite_and_reads_no_features(text_model):
    """An all-masked caption (no tokens) is finite whatever its features."""
    _, _, moved, apply, x_BHWC, t_B, label_B = text_model
    text_BSD, mask_BS = _captions(4, seed=1)
    null_BS = jnp.zeros_like(mask_BS)
    out = apply(moved, x_BHWC, t_B, label_B, text_BSD, null_BS)
    assert np.isfinite(out).all()
    other = apply(moved, x_BHWC, t_B, label_B, 2 * text_BSD + 1, null_BS)
    np.testing.assert_array_equal(other, out)


def test_the_text_matters_once_trained(text_model):
    """With the zero-initialised params moved, two captions, and a caption and
    the null caption, give different outputs."""
    _, _, moved, apply, x_BHWC, t_B, label_B = text_model
    text_BSD, mask_BS = _captions(4, seed=1)
    one = apply(moved, x_BHWC, t_B, label_B, text_BSD, mask_BS)
    two = apply(moved, x_BHWC, t_B, label_B, -text_BSD, mask_BS)
    null = apply(moved, x_BHWC, t_B, label_B, text_BSD, jnp.zeros_like(mask_BS))
    assert not np.allclose(one, two, atol=1e-4)
    assert not np.allclose(one, null, atol=1e-4)


def _is_text_param(key: str) -> bool:
    return key.startswith(("cross_", "text_", "TextAttention_"))


def _without_text(tree):
    if not isinstance(tree, dict):
        return tree
    return {k: _without_text(v) for k, v in tree.items() if not _is_text_param(k)}


def _text_branches_at_zero(params):
    """`params` with the text branches' zero-initialised outputs at zero again."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (
            jnp.zeros_like(x)
            if any(getattr(k, "key", "") in ("cross_out", "text_pool") for k in path)
            else x
        ),
        params,
    )


def test_none_is_todays_model_and_text_starts_unchanged(text_model):
    """With text_conditioning="none" the params are those of a model built
    without the text fields; the text model, its text branches at their zero
    init, computes what that model computes on the shared params."""
    name, _, moved, apply, x_BHWC, t_B, label_B = text_model
    today = _model(name)
    none = _model(name, text_conditioning="none", text_dim=TEXT_DIM)
    shapes = [
        jax.eval_shape(m.init, jax.random.key(0), x_BHWC, t_B, label_B)
        for m in (today, none)
    ]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    shared = _without_text(moved)
    assert jax.tree.structure(_unboxed(shapes[0])) == jax.tree.structure(shared)
    assert jax.tree.map(jnp.shape, _unboxed(shapes[0])) == jax.tree.map(
        jnp.shape, shared
    )
    want = jax.jit(today.apply)(shared, x_BHWC, t_B, label_B)
    got = apply(
        _text_branches_at_zero(moved), x_BHWC, t_B, label_B, *_captions(4, seed=1)
    )
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_scanned_dit_carries_the_text_through_its_blocks():
    from gen_jax.models import transformer

    kw = {"text_conditioning": "cross", "text_dim": TEXT_DIM}
    plain, scanned = _model("dit", **kw), _model("dit", scan_layers=True, **kw)
    x_BHWC = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    args = (x_BHWC, jnp.array([3.0, 900.0]), jnp.array([3, 10]), *_captions(4, 1))
    params = helpers.perturbed(_unboxed(jax.jit(plain.init)(jax.random.key(0), *args)))
    stacked = {"params": transformer.stack_layers(params["params"], 2)}
    want = jax.jit(plain.apply)(params, *args)
    got = jax.jit(scanned.apply)(stacked, *args)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", sorted(_MODELS))
@pytest.mark.parametrize(
    "kw, text, match",
    [
        ({"text_conditioning": "joint"}, True, "joint attention.*not built yet"),
        ({"text_conditioning": "pooled"}, True, "unknown model.text_conditioning"),
        ({}, True, "text_conditioning='none'"),
        ({"text_conditioning": "cross", "text_dim": TEXT_DIM}, False, "needs text"),
        ({"text_conditioning": "cross", "text_dim": 8}, True, "text_dim=8"),
    ],
)
def test_text_fields_refuse_what_they_cannot_do(name, kw, text, match):
    x_BHWC, t_B = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,))
    text_args = _captions(4, seed=1) if text else ()
    text_args = tuple(a[:1] for a in text_args)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(
            _model(name, **kw).init, jax.random.key(0), x_BHWC, t_B, None, *text_args
        )
