import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_pydoc
from gen_jax import build, data, families, sharding, text
from gen_jax.families import lm
from gen_jax.models import attention, transformer
from tests import helpers


@pytest.fixture
def config():
    return lm_pydoc.get_config("smoke")


def _model(**kw):
    args = {
        "vocab_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "embed_dim": 16,
        "mlp_dim": 32,
    } | kw
    model = transformer.Transformer(**args)
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 64)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(1), tokens)["params"])
    return model, {"params": params}, tokens


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"mlp": "swiglu", "norm": "layer", "remat": True, "tie_embeddings": False},
        # Published-decoder options: GQA, a head size apart from the width,
        # Qwen2's biases, Qwen3's q/k norm, llama3 RoPE scaling.
        {
            "num_heads": 4,
            "num_kv_heads": 2,
            "head_dim": 6,
            "qkv_bias": True,
            "qk_norm": True,
            "rope_llama3": (8.0, 1.0, 4.0, 8),
        },
    ],
)
def test_causality_by_gradients(kw):
    model, variables, tokens = _model(**kw)
    zeros = {"perturbations": {"embedded": jnp.zeros((2, 12, 16))}}

    def logit_at(perturbations, t):
        logits, _ = model.apply({**variables, **perturbations}, tokens)
        return jnp.sum(logits[:, t])

    grad_at = jax.jit(jax.grad(logit_at))  # t is traced: one compile for all three
    for t in (0, 5, 11):
        grads = grad_at(zeros, t)["perturbations"]["embedded"]
        per_position = np.abs(np.asarray(grads)).sum(axis=(0, 2))
        assert np.all(per_position[t + 1 :] == 0), (t, per_position)
        assert per_position[t] > 0


@pytest.mark.parametrize("kw", [{}, {"num_heads": 4, "num_kv_heads": 1}])
def test_kv_cache_decoding_matches_full_forward_at_every_position(kw):
    model, variables, tokens = _model(**kw)
    apply = jax.jit(model.apply)  # two programs: the full forward and one step
    full, _ = apply(variables, tokens)
    cache = transformer.init_cache(model, 2, 12)
    for i in range(12):
        logits, cache = apply(
            variables, tokens[:, i : i + 1], jnp.full((2, 1), i), cache
        )
        np.testing.assert_allclose(logits[:, 0], full[:, i], atol=1e-5)


def test_a_packed_row_gives_each_segment_its_logits_alone():
    model, variables, tokens = _model(num_heads=4, num_kv_heads=2)
    a, b = tokens[0, :7], tokens[1, :5]  # two examples in one 12-token row
    row = jnp.concatenate([a, b])[None]
    segments = jnp.array([[1] * 7 + [2] * 5])
    positions = jnp.array([list(range(7)) + list(range(5))])
    apply = jax.jit(model.apply)
    packed, _ = apply(variables, row, positions, segment_ids_BL=segments)
    alone_a, _ = apply(variables, a[None])
    alone_b, _ = apply(variables, b[None])
    np.testing.assert_allclose(packed[0, :7], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:], alone_b[0], atol=1e-5)


def test_top_k_and_top_p_never_emit_masked_tokens():
    logits = jax.random.normal(jax.random.key(0), (2000, 10)) * 2
    keys = jax.random.split(jax.random.key(1), 2000)
    got = np.asarray(lm.sample_logits(logits, keys, 1.0, 3, 1.0))
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    assert all(g in row for g, row in zip(got, top3))
    got = np.asarray(lm.sample_logits(logits, keys, 1.0, 0, 0.5))
    probs = np.asarray(jax.nn.softmax(logits))
    order = np.argsort(-probs, axis=-1)
    for g, p, o in zip(got, probs, order):
        mass_before = np.cumsum(p[o]) - p[o]
        assert g in o[mass_before < 0.5]  # the nucleus
    assert len(set(got.tolist())) > 1


def test_temperature_zero_is_greedy(config):
    model, variables, _ = _model()
    logits = jax.random.normal(jax.random.key(0), (5, 64))
    keys = jax.random.split(jax.random.key(1), 5)
    np.testing.assert_array_equal(
        lm.sample_logits(logits, keys, 0.0, 0, 1.0), jnp.argmax(logits, -1)
    )
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    prompt = jnp.ones((2, 3), jnp.int32)
    a = generate({"model": variables["params"]}, prompt, jnp.array([1, 2]), 10, 0.0)
    b = generate({"model": variables["params"]}, prompt, jnp.array([7, 8]), 10, 0.0)
    np.testing.assert_array_equal(a, b)
    nocache = jax.jit(lm.make_generate(model, use_cache=False), static_argnums=3)
    np.testing.assert_array_equal(
        a, nocache({"model": variables["params"]}, prompt, jnp.array([1, 2]), 10, 0.0)
    )
    # Greedy by hand, a full forward each step: on a fixed-length row (the
    # causal model's logits at i ignore the padding after it), one compile.
    forward, row = jax.jit(model.apply), jnp.zeros((2, 10), jnp.int32)
    row = row.at[:, :3].set(prompt)
    for i in range(3, 10):
        logits, _ = forward(variables, row)
        row = row.at[:, i].set(jnp.argmax(logits[:, i - 1], -1))
    np.testing.assert_array_equal(a, row)


def test_loss_falls_when_overfitting_and_bits_per_byte_arithmetic(config):
    config.optim.model.update(warmup_steps=0, lr=1e-2)
    family = families.make(config)
    batch = {"tokens": jax.random.randint(jax.random.key(0), (4, 17), 0, 256)}
    params = nn.unbox(family.init(jax.random.key(1), batch))
    # Uniform predictions: loss = ln 256, i.e. exactly 8 bits per byte.
    zero = jax.tree.map(jnp.zeros_like, params)
    metrics = family.evaluate(zero, batch, jax.random.key(2))
    np.testing.assert_allclose(metrics["model/loss"], np.log(256), rtol=1e-6)
    np.testing.assert_allclose(metrics["model/bits_per_byte"], 8.0, rtol=1e-6)
    losses = helpers.overfit_losses(config, family, params, batch, 100)
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])


def test_sharding_rules_place_params_as_declared(config):
    config.mesh.update(data=1, fsdp=2, tensor=2)
    config.model.update(num_heads=2, embed_dim=16, mlp_dim=32)
    s = build.setup(config)
    params = s.state_shardings.params["model"]
    P = jax.sharding.PartitionSpec
    assert params["block_0"]["q"]["kernel"].spec == P("fsdp", "tensor", None)
    assert params["block_0"]["up"]["kernel"].spec == P("fsdp", "tensor")
    assert params["block_0"]["down"]["kernel"].spec == P("tensor", "fsdp")
    assert params["Embed_0"]["embedding"].spec == P("tensor", "fsdp")
    state = s.init(s.init_key)
    batches = data.make_train(config.data, batch_size=16, mesh=s.mesh)
    state, metrics = s.train_step(state, next(batches), s.step_key)
    assert state.params["model"]["block_0"]["k"]["kernel"].sharding.spec == P(
        "fsdp", "tensor", None
    )
    assert np.isfinite(float(metrics["model/loss"]))


def test_text_rows_are_packed_and_resume_exactly(config):
    mesh = sharding.make_mesh(config.mesh)
    a = data.make_train(config.data, batch_size=8, mesh=mesh)
    first = next(a)
    assert first["tokens"].shape == (8, 17) and first["tokens"].dtype == np.int32
    state = json.loads(json.dumps(a.iterator.get_state()))  # as the checkpoint does
    want = np.asarray(next(a)["tokens"])
    b = data.make_train(config.data, batch_size=8, mesh=mesh)
    b.iterator.set_state(state)
    np.testing.assert_array_equal(np.asarray(next(b)["tokens"]), want)


def test_tokenizers_round_trip(config, tmp_path):
    sample = "def f(x):\n    return x  # naïve\n"
    byte = text.make_tokenizer(config.data)
    assert byte.vocab_size == 256 and byte.decode(byte.encode(sample)) == sample
    config.data.tokenizer = "char"
    char = text.make_tokenizer(config.data)
    assert char.decode(char.encode("def f(x):\n")) == "def f(x):\n"
    import sentencepiece

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(text.documents(config.data, "train"))[:200_000])
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=300,
        minloglevel=2,
    )
    config.data.update(
        tokenizer="sentencepiece", sentencepiece_model=str(tmp_path / "sp.model")
    )
    sp = text.make_tokenizer(config.data)
    assert sp.vocab_size == 300
    assert sp.decode(sp.encode("return the value")) == "return the value"


@pytest.mark.parametrize("name", ["tiny_shakespeare", "lm1b"])
def test_tfds_text_path_under_mock_data(config, name):
    import tensorflow_datasets as tfds

    config.data.update(name=name, tokenizer="byte", eval_split="test")
    mesh = sharding.make_mesh(config.mesh)
    with tfds.testing.mock_data(num_examples=8):
        batch = next(data.make_train(config.data, batch_size=4, mesh=mesh))
        evals = list(data.make_eval(config.data, batch_size=4, mesh=mesh))
    assert batch["tokens"].shape == (4, 17) and batch["mask"].shape == (4, 17)
    assert evals and evals[0]["tokens"].shape == (4, 17)


def test_scanned_layers_equal_unrolled_with_and_without_the_cache():
    """model.scan_layers: the unrolled params stacked (`stack_layers`) give the
    same logits, prefill and decode; remat with a policy still differentiates."""
    kw = {
        "vocab_size": 50,
        "num_layers": 3,
        "num_heads": 4,
        "num_kv_heads": 2,
        "embed_dim": 32,
        "mlp_dim": 64,
        "mlp": "swiglu",
    }
    unrolled = transformer.Transformer(**kw)
    scanned = transformer.Transformer(**kw, scan_layers=True)
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 50)
    params = nn.unbox(jax.jit(unrolled.init)(jax.random.key(0), tokens)["params"])
    stacked = transformer.stack_layers(params, 3)
    boxed = jax.eval_shape(scanned.init, jax.random.key(0), tokens)
    boxed = boxed["params"]["blocks"]["q"]["kernel"]
    assert boxed.names == ("layers", "embed", "heads", "kv")
    assert nn.unbox(boxed).shape == stacked["blocks"]["q"]["kernel"].shape
    jitted = {id(m): jax.jit(m.apply) for m in (unrolled, scanned)}
    run = lambda m, p, *a: jitted[id(m)]({"params": p}, *(a or (tokens,)))
    np.testing.assert_allclose(
        run(unrolled, params)[0], run(scanned, stacked)[0], atol=1e-6
    )
    cache_u, cache_s = (transformer.init_cache(m, 2, 12) for m in (unrolled, scanned))
    assert cache_s["k"].shape == (2, 3, 12, 2, 8)  # [B, layers, T, G, K]
    a, cache_u = run(unrolled, params, tokens, None, cache_u)
    b, cache_s = run(scanned, stacked, tokens, None, cache_s)
    np.testing.assert_allclose(a, b, atol=1e-6)
    step = (jnp.array([[3], [4]]), jnp.array([[9], [9]]))
    a, _ = run(unrolled, params, step[0], step[1], cache_u)
    b, _ = run(scanned, stacked, step[0], step[1], cache_s)
    np.testing.assert_allclose(a, b, atol=1e-6)
    restored = transformer.unstack_layers(stacked)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        np.testing.assert_array_equal(x, y)
    remat = transformer.Transformer(
        **kw, scan_layers=True, remat=True, remat_policy="dots"
    )
    grads = jax.jit(jax.grad(lambda p: jnp.sum(remat.apply({"params": p}, tokens)[0])))(
        stacked
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_a_scanned_run_resumes_exactly_and_exports(tmp_path):
    """Training, checkpoints, sharding (4 devices) and the export artifact on
    the scanned layout; LoRA refuses it in one line."""
    import shutil

    from gen_jax import checkpoint, train
    from gen_jax.deploy import artifact, export

    config = lm_pydoc.get_config("smoke")
    config.model.scan_layers = True
    config.evals = {}
    reference = train.run(config, str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "6")
    resumed = train.run(config, str(tmp_path / "b"))
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    run = checkpoint.open_run(str(tmp_path / "b"))
    export.export_run(run, str(tmp_path / "art"), context=32)
    assert artifact.Artifact(str(tmp_path / "art")).check_examples() == []
    config.lora.rank = 4
    with pytest.raises(ValueError, match="scan_layers=False"):
        families.make(config)


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("length", [12, 128])
def test_both_attention_implementations_agree(kv_heads, length):
    """`attention.attention`'s batched layout (CPU's default; at 128 tokens its
    causal form runs in two query blocks) and jax.nn.dot_product_attention's
    XLA path (TPU's; GPU cases cuDNN refuses):
    causal, and with a packed-row mask, plain and grouped-query, values and
    gradients."""
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (2, length, 4, 8))
    k, v = (jax.random.normal(key, (2, length, kv_heads, 8)) for key in keys[1:])
    first = length // 3
    segments = jnp.asarray([[1] * first + [2] * (length - first), [1] * length])
    mask = attention.attention_mask(jnp.zeros((2, length), int), segments)
    weights = jax.random.normal(jax.random.key(1), q.shape)

    @jax.jit
    def values_and_grads(q, k, v, m):  # both implementations in one program
        out = {}
        for impl in ("batched", "xla"):
            f = lambda q, k, v, impl=impl: (
                attention.attention(q, k, v, m, impl=impl) * weights
            ).sum()
            out[impl] = (
                attention.attention(q, k, v, m, impl=impl),
                jax.grad(f, argnums=(0, 1, 2))(q, k, v),
            )
        return out

    for m in (None, mask):
        out = values_and_grads(q, k, v, m)
        (fused, fused_grads), (xla, xla_grads) = out["xla"], out["batched"]
        np.testing.assert_allclose(xla, fused, atol=1e-5)
        assert not np.allclose(fused[:, first + 1], 0)
        for a, b in zip(fused_grads, xla_grads):
            np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.parametrize(
    "backend, dtype, dim, length, masked, expected",
    [
        ("cpu", "bfloat16", 64, 128, False, "batched"),
        ("cpu", "float32", 64, 128, True, "batched"),
        ("gpu", "bfloat16", 64, 128, False, "cudnn"),
        ("cuda", "float16", 128, 128, True, "cudnn"),
        ("gpu", "float32", 64, 128, False, "xla"),  # cuDNN: fp16/bf16 only
        ("gpu", "bfloat16", 256, 128, False, "xla"),  # head dim over 128
        ("gpu", "bfloat16", 36, 128, False, "xla"),  # not a multiple of 8
        ("gpu", "bfloat16", 64, 127, True, "xla"),  # a mask (bias): even lengths
        ("gpu", "bfloat16", 64, 127, False, "cudnn"),  # causal: any length
        ("tpu", "bfloat16", 64, 128, False, "xla"),
        ("rocm", "bfloat16", 64, 128, False, "xla"),  # cuDNN is NVIDIA's
    ],
)
def test_attention_implementation_by_backend(
    backend, dtype, dim, length, masked, expected
):
    """The attention each backend and input gets: cuDNN's fused kernel only
    where it runs (jax.nn.dot_product_attention would pick its XLA path on
    GPU too unless told), the batched path on CPU."""
    q = jax.ShapeDtypeStruct((2, length, 4, dim), jnp.dtype(dtype))
    mask = jnp.ones((2, 1, length, length), bool) if masked else None
    assert attention.implementation(q, q, mask, backend) == expected


def test_an_unknown_attention_implementation_is_refused():
    x = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        attention.attention(x, x, x, impl="flash")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"norm": "batch"}, "model.norm 'batch'"),
        ({"mlp": "relu"}, "model.mlp 'relu'"),
        ({"num_kv_heads": 3}, "num_heads=4 is not a multiple"),
    ],
)
def test_block_config_rejects_a_block_it_cannot_build(kw, match):
    model = transformer.Transformer(vocab_size=8, num_heads=4, embed_dim=16, **kw)
    with pytest.raises(ValueError, match=match):
        model.block_config()
