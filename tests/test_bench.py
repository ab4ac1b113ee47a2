"""The benchmark tool, FLOP counts against hand counts, and the fast layers
against the straightforward versions they replace."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_pydoc, vae_digits
from gen_jax import bench, families, provenance
from gen_jax.families import lm
from gen_jax.models import layers, precision
from tests import helpers


def test_bench_runs_the_real_step_and_writes_every_field(tmp_path):
    config = vae_digits.get_config("smoke")
    out = str(tmp_path / "bench.jsonl")
    records = bench.run(
        config,
        label="vae smoke",
        steps=3,
        warmup=1,
        batch_sizes=[8, 16],
        data_batches=2,
        profile=str(tmp_path / "trace"),
        out=out,
    )
    with open(out) as f:
        lines = [json.loads(line) for line in f]
    assert [r["batch_size"] for r in lines] == [8, 16]
    for r in lines:
        assert set(bench.FIELDS) <= set(r)
        assert r["mode"] == "train" and r["family"] == "vae"
        assert 0 < r["step_s_p10"] <= r["step_s_median"] <= r["step_s_p90"]
        assert r["examples_per_s"] == pytest.approx(
            r["batch_size"] / r["step_s_median"]
        )
        assert r["flops_per_step_xla"] > 0 and 0 < r["mfu"]
        assert r["memory_peak_bytes"] > 0 and r["data_batches_per_s"] > 0
        assert r["num_params"] > 0 and r["compile_s"] > 0
        assert r["jax_version"] == jax.__version__ and r["backend"] == "cpu"
        assert r["jax_version"] == jax.__version__ and r["dtype"] == "float32"
        assert r["xla_flags"] == os.environ.get("XLA_FLAGS", "")
        assert r["commit"] is None or len(r["commit"]) >= 7
    # Twice the batch, about twice the FLOPs (the optimizer's are per param).
    assert 1.5 < lines[1]["flops_per_step_xla"] / lines[0]["flops_per_step_xla"] < 2.1
    assert records[0]["profile_dir"] and records[1]["profile_dir"] is None
    assert list((tmp_path / "trace").rglob("*.xplane.pb"))
    assert "ms/step median" in bench.format_table(records)


def test_bench_cli_times_the_lm_sampler_and_reports_tokens(tmp_path):
    out = tmp_path / "b.jsonl"
    result = helpers.run_module(
        "gen_jax.main",  # as `gen-jax bench ...`
        "bench",
        "--config=configs/lm_pydoc.py:smoke",
        "--config.data.seq_len=9",
        "--mode=sample",
        "--timed_steps=2",
        "--warmup_steps=1",
        f"--out={out}",
        devices=1,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["mode"] == "sample" and record["family"] == "lm"
    assert record["tokens_per_s"] == pytest.approx(8 * record["examples_per_s"])
    assert "--config.data.seq_len=9" in record["config"]
    assert "tokens/s" in result.stdout


def test_bench_cli_names_a_bad_override():
    result = helpers.run_module(
        "gen_jax.main",
        "bench",
        "--config=configs/vae_digits.py:smoke",
        "--config.train.batch_sise=8",
        devices=1,
    )
    assert result.returncode == 2
    assert "config.train.batch_size?" in result.stderr


def test_xla_flops_of_a_tiny_mlp_match_a_hand_count():
    b, d, f = 8, 16, 32
    x = jnp.ones((b, d))
    w1, w2 = jnp.ones((d, f)), jnp.ones((f, 1))
    compiled = jax.jit(lambda x, w1, w2: jax.nn.relu(x @ w1) @ w2).lower(x, w1, w2)
    # Two matmuls: 2 * b * d * f and 2 * b * f * 1; relu is a max per element.
    hand = 2 * b * d * f + 2 * b * f + b * f
    assert bench._xla_flops(compiled.compile()) == pytest.approx(hand, rel=0.02)


def test_lm_flop_count_matches_a_hand_count_and_xla():
    config = lm_pydoc.get_config("smoke")
    config.model.update(num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64)
    config.data.seq_len = 33
    family = families.make(config)
    model, tokenizer = lm.make_model(config)
    v, d, f, n_layers, length = tokenizer.vocab_size, 32, 64, 2, 32
    # Matmul params: qkv 3d^2, out d^2, up and down 2df per layer, tied unembed vd.
    matmul_params = n_layers * (4 * d * d + 2 * d * f) + v * d
    # Forward per token: 2 per matmul weight, plus QK^T and AV: 2 * 2 * L * d per layer.
    forward = 2 * matmul_params + n_layers * 4 * length * d
    hand = 3 * forward * length  # backward = 2x forward
    # The analytic count uses every param (norm scales add 0.2% here).
    assert family.per_example["flops"] == pytest.approx(hand, rel=0.01)
    tokens = jnp.zeros((1, length), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens))["params"]

    def loss(p):
        logits, _ = model.apply({"params": p}, tokens)
        return jnp.mean(logits)

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    # XLA adds softmax, norm and elementwise work, and rewrites some of these
    # tiny dots (head dim 16) into multiply-reduce, counted a little lower.
    assert 0.9 * hand <= bench._xla_flops(compiled) <= 1.25 * hand


def test_rows_record_the_cpu_and_its_bf16_features(tmp_path):
    """A row says which CPU ran it: machines of one kind differ (AVX2 only, or
    AVX-512 with BF16), and with them what a bf16 dot costs."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert provenance.cpu(str(info)) == {
        "cpu": "AMD EPYC 9R14",
        "cpu_id": "25/17",
        "cpu_features": "avx2 fma avx512f avx512_bf16",
    }
    assert provenance.cpu(str(tmp_path / "absent"))["cpu_features"] is None


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
@pytest.mark.parametrize("size", [4, 7])
def test_conv_transpose_2x_equals_flax_conv_transpose(kernel_size, size):
    key = jax.random.key(kernel_size * 10 + size)
    x = jax.random.normal(key, (2, size, size, 3))
    reference = nn.ConvTranspose(5, (kernel_size, kernel_size), (2, 2), "SAME")
    fast = layers.ConvTranspose2x(5, kernel_size)
    params = jax.jit(fast.init)(key, x)
    shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
    assert shapes(params) == shapes(jax.eval_shape(reference.init, key, x))
    params = jax.tree.map(lambda a: a + 0.1, params)  # a non-zero bias
    y = jax.jit(reference.apply)(params, x)
    np.testing.assert_allclose(jax.jit(fast.apply)(params, x), y, atol=1e-5)
    g = jax.random.normal(key, y.shape)

    def grads(module):
        return jax.jit(
            jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * g), argnums=(0, 1))
        )(params, x)

    for a, b in zip(jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(reference))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "groups", "dtype"),
    [
        ((3, 5, 7, 32), 8, "float32"),
        ((2, 4, 4, 6), 3, "float32"),
        ((2, 4, 4, 8), 4, "bfloat16"),
    ],
)
def test_group_norm_equals_flax_group_norm(shape, groups, dtype):
    key = jax.random.key(0)
    x = 3 * jax.random.normal(key, shape) + 2
    dtype = precision.compute_dtype(dtype)
    reference, fast = (
        nn.GroupNorm(groups, dtype=dtype),
        layers.GroupNorm(groups, dtype=dtype),
    )
    params = helpers.perturbed(jax.jit(reference.init)(key, x), scale=1.0)
    y = jax.jit(reference.apply)(params, x)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2  # bf16: a few ulps
    got = jax.jit(fast.apply)(params, x)
    assert got.dtype == y.dtype
    np.testing.assert_allclose(
        got.astype(np.float32),
        y.astype(np.float32),
        rtol=tol,
        atol=tol,
    )

    if dtype != jnp.float32:
        return  # bf16 gradients of either version are only as close as bf16 noise

    def grads(module):
        loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

    for a, b in zip(jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(reference))):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(a / scale, b / scale, atol=tol)


def test_transformer_dense_equals_dense_general():
    key = jax.random.key(0)
    x = jax.random.normal(key, (2, 5, 3, 4))
    fast = layers.Dense((6, 2), ("heads", "kv"), ("embed", None))
    reference = nn.DenseGeneral((6, 2), axis=(-2, -1), use_bias=False)
    params = nn.unbox(fast.init(key, x))
    assert params["params"]["kernel"].shape == (3, 4, 6, 2)
    np.testing.assert_allclose(
        fast.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5
    )
