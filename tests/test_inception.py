"""FID InceptionV3: shapes, weight file round trip, pytorch-fid conversion, pooling."""

import re
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gen_jax.models import inception

# XLA:CPU compiles of the whole net take seconds: every forward here runs at the
# smallest size the net accepts, through this one jitted function.
_forward = jax.jit(
    lambda params, x: inception.InceptionV3().apply({"params": params}, x, resize=75)
)


def _shapes() -> dict[str, tuple[int, ...]]:
    x_spec = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    init = inception.InceptionV3().init
    tree = jax.eval_shape(lambda k, x: init(k, x, resize=75), jax.random.key(0), x_spec)
    return {k: v.shape for k, v in traverse_util.flatten_dict(tree["params"]).items()}


@pytest.fixture(scope="module")
def params():
    """Random params scaled so activations stay O(1) and depend on the input."""
    rng = np.random.default_rng(0)
    flat = {}
    for path, shape in _shapes().items():
        if path[-1] == "kernel":
            value = rng.normal(size=shape) * np.sqrt(2 / np.prod(shape[:-1]))
        elif path[-1] in ("bn_scale", "bn_var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        flat[path] = value.astype(np.float32)
    return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def images_BHWC():
    return jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 24, 24, 3)))


def _flat(tree) -> dict[str, np.ndarray]:
    return traverse_util.flatten_dict(tree, sep="/")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_output_shapes_at_299(dtype):
    model = inception.InceptionV3(dtype=dtype)
    x_spec = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x_spec)
    pool_BD, logits_BV = jax.eval_shape(model.apply, variables, x_spec)
    assert pool_BD.shape == (2, 2048) and logits_BV.shape == (2, 1008)
    assert pool_BD.dtype == logits_BV.dtype == jnp.float32
    flat = _flat(variables["params"])
    assert flat["Mixed_5b/branch1x1/kernel"].shape == (1, 1, 192, 64)
    assert flat["Mixed_7c/branch_pool/bn_var"].shape == (192,)
    assert flat["fc/kernel"].shape == (2048, 1008)
    assert all(v.dtype == jnp.float32 for v in flat.values())


def test_rejects_resize_below_75():
    with pytest.raises(ValueError, match="resize"):
        jax.eval_shape(
            lambda x: inception.InceptionV3().init(jax.random.key(0), x, resize=64),
            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
        )


def test_loads_weights_from_a_file_written_by_the_test(params, images_BHWC, tmp_path):
    path = str(tmp_path / "sub" / "inception.npz")
    inception.save_params(params, path)
    loaded = inception.load_params(path)
    assert _flat(loaded).keys() == _flat(params).keys()
    pool_BD, logits_BV = _forward(params, images_BHWC)
    loaded_pool_BD, loaded_logits_BV = _forward(loaded, images_BHWC)
    np.testing.assert_array_equal(loaded_pool_BD, pool_BD)
    np.testing.assert_array_equal(loaded_logits_BV, logits_BV)
    assert np.isfinite(pool_BD).all() and np.isfinite(logits_BV).all()
    # The features depend on the image, so the comparison above means something.
    assert np.abs(pool_BD[0] - pool_BD[1]).max() > 1e-3


def test_grey_images_are_repeated_to_three_channels(params, images_BHWC):
    grey_BHWC = images_BHWC[..., :1]
    rgb_BHWC = jnp.repeat(grey_BHWC, 3, axis=-1)
    for got, want in zip(_forward(params, grey_BHWC), _forward(params, rgb_BHWC)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_missing_file_names_the_path_and_the_conversion(tmp_path):
    path = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match=re.escape(path)) as info:
        inception.load_params(path)
    assert "gen-jax convert-inception" in str(info.value)
    assert "pytorch-fid" in str(info.value)


def test_file_with_a_missing_key_or_wrong_shape_is_rejected(params, tmp_path):
    flat = _flat(params)
    missing = dict(flat)
    del missing["Mixed_6e/branch_pool/bn_var"]
    path = tmp_path / "missing_key.npz"
    np.savez(path, **missing)
    with pytest.raises(ValueError, match="Mixed_6e/branch_pool/bn_var"):
        inception.load_params(str(path))
    wrong = flat | {"fc/bias": np.zeros(1000, np.float32)}
    path = tmp_path / "wrong_shape.npz"
    np.savez(path, **wrong)
    with pytest.raises(ValueError, match="fc/bias"):
        inception.load_params(str(path))


def _to_pytorch_fid(params) -> dict[str, np.ndarray]:
    """The inverse mapping, written out: our params -> a pytorch-fid state dict."""
    bn = {
        "bn_scale": "weight",
        "bn_bias": "bias",
        "bn_mean": "running_mean",
        "bn_var": "running_var",
    }
    state_dict = {
        "fc.weight": np.asarray(params["fc"]["kernel"]).T,
        "fc.bias": np.asarray(params["fc"]["bias"]),
    }
    for path, value in traverse_util.flatten_dict(params).items():
        if path[0] == "fc":
            continue
        module = ".".join(path[:-1])
        if path[-1] == "kernel":
            state_dict[f"{module}.conv.weight"] = np.transpose(value, (3, 2, 0, 1))
        else:
            state_dict[f"{module}.bn.{bn[path[-1]]}"] = np.asarray(value)
            state_dict[f"{module}.bn.num_batches_tracked"] = np.array(0)
    return state_dict


def test_convert_pytorch_fid_round_trip(params):
    state_dict = _to_pytorch_fid(params)
    assert state_dict["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # OIHW
    assert state_dict["fc.weight"].shape == (1008, 2048)
    converted = _flat(inception.convert_pytorch_fid(state_dict))
    expected = _flat(params)
    assert converted.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    with pytest.raises(ValueError, match="AuxLogits"):
        inception.convert_pytorch_fid(state_dict | {"AuxLogits.fc.weight": np.ones(1)})


def test_convert_file_reads_torch_load_output(params, tmp_path, monkeypatch):
    tensors = {
        k: types.SimpleNamespace(numpy=lambda v=v: v)
        for k, v in _to_pytorch_fid(params).items()
    }
    fake_torch = types.SimpleNamespace(load=lambda path, **kwargs: tensors)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    out = str(tmp_path / "converted.npz")
    assert inception.convert_file("fake.pth", out) == out
    loaded = _flat(inception.load_params(out))
    for key, value in _flat(params).items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_conversion_without_torch_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ModuleNotFoundError, match="pip install torch"):
        inception.convert_file("x.pth", str(tmp_path / "never.npz"))


def test_average_pool_excludes_padding():
    x_BHWC = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    # Corners average 4 pixels, edges 6, the centre all 9 (count_include_pad=False).
    want = np.array([[3.0, 3.5, 4.0], [4.5, 5.0, 5.5], [6.0, 6.5, 7.0]])
    np.testing.assert_allclose(inception.avg_pool_3x3(x_BHWC)[0, :, :, 0], want)
    x_BHWC = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
    flax_pool = nn.avg_pool(
        x_BHWC, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=False
    )
    np.testing.assert_allclose(inception.avg_pool_3x3(x_BHWC), flax_pool, rtol=1e-6)
