"""`gen-jax export`: each family's artifact reruns, bitwise, in a process where
gen_jax, flax and optax cannot be imported; the image sampler is `gen-jax
sample`'s; the LM's prefill/decode give `make_generate`'s tokens."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gen_jax.deploy import artifact
from tests import helpers

FAMILIES = ("lm_pydoc", "ddpm_digits", "vae_digits", "gan_digits")
IMAGE_FAMILIES = FAMILIES[1:]

# sitecustomize for the standalone process: importing these fails loudly.
BLOCKER = """
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"gen_jax", "flax", "optax", "orbax", "tensorflow"}:
            raise ImportError(f"{name} is blocked: an artifact loads without it")

sys.meta_path.insert(0, Blocked())
"""


def check_standalone(directory: str, tmp_path) -> None:
    """The artifact's load.py reruns its examples bitwise in a process where
    gen_jax, flax, optax, orbax and TensorFlow cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "XLA_FLAGS": helpers.xla_flags(1)}

    def run(*args, **kw):
        return subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            **kw,
        )

    assert "blocked" in run("-c", "import gen_jax").stderr  # the blocker works
    result = run(os.path.join(directory, "load.py"), directory, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "examples match" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_artifact_reruns_bitwise_without_gen_jax(exported, tmp_path, name):
    directory = exported(name)
    check_standalone(directory, tmp_path)
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == artifact.FORMAT
    assert manifest["version"] == artifact.VERSION
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
    assert manifest["jax_version"] == jax.__version__
    for spec in manifest["functions"].values():
        assert spec["args"][0]["name"] == "params"
        assert all(
            {"name", "shape", "dtype", "meaning"} <= a.keys() for a in spec["args"][1:]
        )
    if name != "lm_pydoc":  # the number of images is symbolic
        assert manifest["functions"]["sample"]["args"][1]["shape"] == ["n"]


def test_gan_and_vae_artifacts_hold_only_the_sampling_network(exported):
    gan = artifact.Artifact(exported("gan_digits")).manifest["functions"]["sample"]
    vae = artifact.Artifact(exported("vae_digits")).manifest["functions"]["sample"]
    assert gan["params"] and all(k.startswith("gen/") for k in gan["params"])
    assert vae["params"] and all(k.startswith("model/decoder/") for k in vae["params"])


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_exported_sampler_gives_gen_jax_samples_images(trained, exported, name):
    """seeds all S, indices 0..n-1 and every class in turn: `gen-jax sample --seed=S`."""
    from gen_jax import checkpoint, sample

    run = checkpoint.open_run(trained(name))
    want = sample.images(run, num_samples=4, seed=3)
    art = artifact.Artifact(exported(name))
    info = art.manifest["images"]
    labels = np.arange(4) % max(run.config.data.get("num_classes", 0), 1)
    got = art.call(
        "sample",
        np.full(4, 3, np.int32),
        np.arange(4, dtype=np.int32),
        labels.astype(np.int32),
        np.full(4, info.get("guidance", 1.0), np.float32),
    )
    assert got.shape == (4, *info["shape"])
    # The same computation in two programs (here sharded over 4 devices).
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_prefill_and_decode_give_make_generate_tokens_and_their_logprobs(
    trained, exported
):
    """Sampled at temperature 0.8, top-k 20: a slot driven one token at a time by
    the artifact equals `gen-jax sample`'s KV-cache loop for the same seed; the
    log-probabilities the programs return (the prompt's, scored by prefill, and
    each sampled token's) are a full forward pass's log-softmax, and each
    token's likeliest alternatives are sorted, the first the argmax."""
    from gen_jax import checkpoint
    from gen_jax.families import lm
    from gen_jax.models import transformer

    run = checkpoint.open_run(trained("lm_pydoc"))
    model, tokenizer = lm.make_model(run.config)
    prompt = tokenizer.prompt("The ")
    total = len(prompt) + 10
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    want = np.asarray(
        generate(run.params, prompt[None], np.int32([7]), total, 0.8, 20, 1.0)
    )

    art = artifact.Artifact(exported("lm_pydoc"))
    context, k = art.manifest["lm"]["context"], art.manifest["lm"]["top_logprobs"]
    cache = jax.device_get(transformer.init_cache(model, 3, context))
    i32, f32 = lambda *x: np.asarray(x, np.int32), lambda *x: np.asarray(x, np.float32)
    padded = np.zeros((1, 16), np.int32)
    padded[0, : len(prompt)] = prompt
    out, cache = art.call(
        "prefill",
        cache,
        i32(2),
        padded,
        i32(len(prompt)),
        i32(7),
        f32(0.8),
        i32(20),
        f32(1.0),
        i32(1),
    )
    prompt_scores = [np.asarray(out["prompt_logprob"])[0, 1 : len(prompt)]]
    outs = [out]
    for position in range(len(prompt), total - 1):  # slot 2 is ours; 0 and 1 idle
        row = lambda mine, idle: [idle, idle, mine]
        out, cache = art.call(
            f"decode_{art.manifest['lm']['decode_windows'][0]}",
            cache,
            i32(*row(int(outs[-1]["token"][-1]), 0)),
            i32(*row(position, 0)),
            i32(*row(7, 0)),
            f32(*row(0.8, 0.0)),
            i32(*row(20, 0)),
            f32(*row(1.0, 1.0)),
        )
        outs.append(out)
    last = lambda key: np.asarray([np.asarray(o[key])[-1] for o in outs])
    tokens = last("token")
    np.testing.assert_array_equal(tokens, want[0, len(prompt) :])

    logits = model.apply({"params": run.params["model"]}, want)[0][0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(np.float32), -1))
    ids = want[0]
    full = logp[np.arange(len(ids) - 1), ids[1:]]  # position j by the logits at j - 1
    got = np.concatenate([prompt_scores[0], last("logprob")])
    np.testing.assert_allclose(got, full, atol=1e-4)
    top_ids, top_logprobs = last("top_ids"), last("top_logprobs")
    assert top_ids.shape == (len(tokens), k) == (10, 20)
    steps = logp[len(prompt) - 1 : -1]
    np.testing.assert_array_equal(top_ids[:, 0], steps.argmax(-1))
    np.testing.assert_allclose(
        top_logprobs, np.take_along_axis(steps, top_ids, -1), atol=1e-4
    )
    assert (np.diff(top_logprobs, axis=-1) <= 0).all()


def test_unknown_platform_is_one_line_naming_the_choices(trained, tmp_path):
    result = helpers.gen_jax(
        "export",
        f"--workdir={trained('vae_digits')}",
        f"--out={tmp_path / 'a'}",
        "--platforms=cpu,metal",
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "metal" in last and "cpu, cuda, rocm, tpu" in last
