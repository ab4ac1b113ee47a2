"""FID/Inception Score InceptionV3: TF's 2015-12-05 graph, as pytorch-fid ports it.

Szegedy et al., 2016, "Rethinking the Inception Architecture for Computer Vision",
with the FID patches: average pools exclude padding, Mixed_7c max-pools, 1008 logits.
Inference only; weights are converted once from pytorch-fid's checkpoint.
"""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gen_jax.models import precision

DEFAULT_WEIGHTS = "~/.cache/gen_jax/inception_fid.npz"
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_URL = "https://github.com/mseitzer/pytorch-fid/releases"
_BN_EPS = 1e-3
# pytorch-fid's BatchNorm2d fields -> our BasicConv2d params.
_BN = {"weight": "bn_scale", "bias": "bn_bias"}
_BN |= {"running_mean": "bn_mean", "running_var": "bn_var"}


def avg_pool_3x3(x_BHWC: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool over in-image pixels only (count_include_pad=False)."""

    def sum_pool(a):
        zero = jnp.zeros((), a.dtype)
        pad = ((0, 0), (1, 1), (1, 1), (0, 0))
        return jax.lax.reduce_window(a, zero, jax.lax.add, (1, 3, 3, 1), (1,) * 4, pad)

    count_1HW1 = sum_pool(jnp.ones((1, *x_BHWC.shape[1:3], 1), x_BHWC.dtype))
    return sum_pool(x_BHWC) / count_1HW1


def _max_pool(x_BHWC, strides: int, padding: str = "VALID"):
    return nn.max_pool(x_BHWC, (3, 3), strides=(strides, strides), padding=padding)


class BasicConv2d(nn.Module):
    """Conv without bias, frozen inference batch-norm (eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: str = "SAME"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC):
        c = self.features
        shape = (*self.kernel_size, x_BHWC.shape[-1], c)
        kernel = self.param("kernel", nn.initializers.he_normal(), shape)
        # Batch-norm statistics are constants of the pretrained net, not BatchNorm.
        scale_C = self.param("bn_scale", nn.initializers.ones, (c,))
        bias_C = self.param("bn_bias", nn.initializers.zeros, (c,))
        mean_C = self.param("bn_mean", nn.initializers.zeros, (c,))
        var_C = self.param("bn_var", nn.initializers.ones, (c,))
        # Fold the normalisation into the kernel and a bias, in float32.
        gain_C = scale_C * jax.lax.rsqrt(var_C + _BN_EPS)
        shift_C = bias_C - mean_C * gain_C
        y = jax.lax.conv_general_dilated(
            x_BHWC.astype(self.dtype),
            (kernel * gain_C[None, None, None]).astype(self.dtype),
            (self.strides, self.strides),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return nn.relu(y + shift_C[None, None, None].astype(self.dtype))


class InceptionA(nn.Module):
    """Mixed_5b..5d: 1x1, 5x5, double 3x3 and average-pool branches."""

    pool_features: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(64, name="branch1x1")(x)
        b5 = conv(48, name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), name="branch5x5_2")(b5)
        b3 = conv(64, name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: stride-2 reduction, 35x35 -> 17x17."""

    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = conv(384, (3, 3), 2, "VALID", name="branch3x3")(x)
        bd = conv(64, name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), 2, "VALID", name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 branches with `c7` inner channels."""

    c7: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        c7 = self.c7
        b1 = conv(192, name="branch1x1")(x)
        b7 = conv(c7, name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), name="branch7x7_3")(b7)
        bd = conv(c7, name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), name="branch7x7dbl_5")(bd)
        bp = conv(192, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: stride-2 reduction, 17x17 -> 8x8."""

    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = conv(192, name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), 2, "VALID", name="branch3x3_2")(b3)
        b7 = conv(192, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), 2, "VALID", name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool) and Mixed_7c (max pool, as in the FID graph)."""

    pool: str  # "avg" or "max"
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(320, name="branch1x1")(x)
        b3 = conv(384, name="branch3x3_1")(x)
        b3a = conv(384, (1, 3), name="branch3x3_2a")(b3)
        b3b = conv(384, (3, 1), name="branch3x3_2b")(b3)
        bd = conv(448, name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), name="branch3x3dbl_2")(bd)
        bda = conv(384, (1, 3), name="branch3x3dbl_3a")(bd)
        bdb = conv(384, (3, 1), name="branch3x3dbl_3b")(bd)
        # max_pool pads with -inf, like torch's F.max_pool2d(padding=1).
        pooled = avg_pool_3x3(x) if self.pool == "avg" else _max_pool(x, 1, "SAME")
        bp = conv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID Inception: images in [-1, 1] -> (2048-d pool3 features, 1008 logits)."""

    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BHWC, resize: int = 299):
        if resize < 75:
            raise ValueError(f"resize must be >= 75 for InceptionV3, got {resize}")
        if x_BHWC.shape[-1] not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got shape {x_BHWC.shape}")
        dtype = precision.compute_dtype(self.dtype)
        conv = functools.partial(BasicConv2d, dtype=dtype)
        x_BHWC = jnp.broadcast_to(x_BHWC, (*x_BHWC.shape[:3], 3)).astype(jnp.float32)
        # No antialiasing, so this matches torch's bilinear (align_corners=False)
        # both up and down, as pytorch-fid resizes.
        size = (x_BHWC.shape[0], resize, resize, 3)
        x_BHWC = jax.image.resize(x_BHWC, size, "bilinear", antialias=False)
        h = conv(32, (3, 3), 2, "VALID", name="Conv2d_1a_3x3")(x_BHWC)
        h = conv(32, (3, 3), padding="VALID", name="Conv2d_2a_3x3")(h)
        h = conv(64, (3, 3), name="Conv2d_2b_3x3")(h)
        h = conv(80, name="Conv2d_3b_1x1")(_max_pool(h, 2))
        h = conv(192, (3, 3), padding="VALID", name="Conv2d_4a_3x3")(h)
        h = _max_pool(h, 2)
        for name, pool_features in (("5b", 32), ("5c", 64), ("5d", 64)):
            h = InceptionA(pool_features, dtype, name=f"Mixed_{name}")(h)
        h = InceptionB(dtype, name="Mixed_6a")(h)
        for name, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
            h = InceptionC(c7, dtype, name=f"Mixed_{name}")(h)
        h = InceptionD(dtype, name="Mixed_7a")(h)
        h = InceptionE("avg", dtype, name="Mixed_7b")(h)
        h = InceptionE("max", dtype, name="Mixed_7c")(h)
        pool_BD = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        logits_BV = nn.Dense(1008, name="fc")(pool_BD)  # float32, like all logits
        return pool_BD, logits_BV


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """The "/"-joined param paths of InceptionV3 and their shapes."""
    x_spec = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    init = functools.partial(InceptionV3().init, resize=75)
    tree = jax.eval_shape(init, jax.random.key(0), x_spec)["params"]
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {k: v.shape for k, v in flat.items()}


def _check_and_unflatten(flat: dict[str, np.ndarray], source: str) -> dict:
    expected = _expected_shapes()
    missing = sorted(expected.keys() - flat.keys())
    unexpected = sorted(flat.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"{source}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    wrong = [
        f"{k}: {flat[k].shape} != expected {expected[k]}"
        for k in sorted(expected)
        if flat[k].shape != expected[k]
    ]
    if wrong:
        raise ValueError(f"{source}: wrong shapes {wrong[:5]}")
    flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    return traverse_util.unflatten_dict(flat, sep="/")


def load_params(path: str) -> dict:
    """Reads InceptionV3 params (numpy float32) from an .npz written by save_params."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no Inception weights at {path}. Download {PTH_NAME} from {PTH_URL}, "
            f"then run (needs torch): gen-jax convert-inception "
            f"--torch_weights={PTH_NAME} --out={path}"
        )
    with np.load(path) as data:
        flat = {k: data[k] for k in data.files}
    return _check_and_unflatten(flat, path)


def save_params(params: dict, path: str) -> None:
    """Writes params to `path` as an .npz keyed by "/"-joined param paths."""
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flat = traverse_util.flatten_dict(params, sep="/")
    with open(path, "wb") as f:  # a file object, so numpy adds no ".npz" suffix
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


def convert_pytorch_fid(state_dict: dict[str, np.ndarray]) -> dict:
    """Maps pytorch-fid's FIDInceptionV3 state dict (numpy arrays) to our params."""
    flat = {}
    for name, value in state_dict.items():
        value = np.asarray(value, np.float32)
        prefix, _, leaf = name.rpartition(".")
        module, _, layer = prefix.rpartition(".")
        path = module.replace(".", "/")
        if leaf == "num_batches_tracked":
            continue
        if name == "fc.weight":
            flat["fc/kernel"] = value.T
        elif name == "fc.bias":
            flat["fc/bias"] = value
        elif layer == "conv" and leaf == "weight":
            flat[f"{path}/kernel"] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif layer == "bn" and leaf in _BN:
            flat[f"{path}/{_BN[leaf]}"] = value
        else:
            raise ValueError(f"unexpected key in the pytorch-fid state dict: {name!r}")
    return _check_and_unflatten(flat, "pytorch-fid state dict")


def convert_file(torch_weights: str, out: str = DEFAULT_WEIGHTS) -> str:
    """Converts pytorch-fid's .pth checkpoint into our .npz at `out` (needs torch
    for this step only); returns the path written."""
    try:
        import torch  # only the conversion needs torch; gen_jax does not
    except ImportError as e:
        raise ModuleNotFoundError(
            "the conversion needs torch: pip install torch (for this step only)"
        ) from e
    state_dict = torch.load(
        os.path.expanduser(torch_weights), map_location="cpu", weights_only=True
    )
    params = convert_pytorch_fid({k: v.numpy() for k, v in state_dict.items()})
    save_params(params, out)
    return os.path.expanduser(out)
