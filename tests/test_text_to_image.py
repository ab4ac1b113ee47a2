"""Text-to-image (families/text_encoder.py, configs/t2i_digits.py) chained on
an LM smoke run: the encoder loads at step 0 and stays frozen, padding never
changes an output, captions drop at the configured rate, guidance against
the null caption is the unguided model at scale 1, the run resumes exactly,
and `gen-jax sample --prompt` draws from a caption.

The module trains its own two runs in process, on one xdist worker (its own
group, so it runs beside the shared CLI runs of the "trained" group)."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_pydoc, lm_shakespeare_char, t2i_digits
from gen_jax import captions, checkpoint, data, families, pytree, sample, text, train
from gen_jax.families import text_encoder
from gen_jax.families.family import image_keys
from tests import helpers

pytestmark = pytest.mark.xdist_group("text_to_image")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(LM workdir, text-to-image workdir, its config): t2i_digits:smoke (with
    its prompts evaluator) reading an lm_pydoc:smoke run."""
    lm_dir = str(tmp_path_factory.mktemp("lm") / "run")
    lm_config = lm_pydoc.get_config("smoke")
    lm_config.evals = {}
    train.run(lm_config, lm_dir)
    config = t2i_digits.get_config("smoke")
    config.text.encoder = lm_dir
    # Its prompts evaluator on one split (each split is the same program); no
    # null-caption grid (one sampler program fewer to compile).
    config.evals.prompts.splits = ("heldout_combos",)
    del config.evals["samples"]
    workdir = str(tmp_path_factory.mktemp("t2i") / "run")
    train.run(config, workdir)
    return lm_dir, workdir, config


def _opened(workdir):
    """The run with its denoiser perturbed: after a few steps its zero-started
    text projections have barely moved, and the text must matter here."""
    run = checkpoint.open_run(workdir)
    params = run.params | {"model": helpers.perturbed(run.params["model"])}
    return dataclasses.replace(run, params=params)


def _prompts(run, texts, length=None):
    info = run.family.images.prompts
    return text.fixed_length(texts, info.tokenizer, length or info.length)


def _generate(run, prompt=None, negative=None, guidance=2.0):
    n = len(next(iter(prompt.values()))) if prompt else 2
    return np.asarray(
        jax.jit(run.family.generate)(
            run.params,
            image_keys(jax.random.key(0), n),
            jnp.zeros((n,), jnp.int32),
            jnp.full((n,), guidance),
            None,
            prompt,
            negative,
        )
    )


def test_the_encoder_loads_at_step_0_and_stays_frozen(runs):
    lm_dir, workdir, _ = runs
    run = checkpoint.open_run(workdir)
    lm_params = checkpoint.open_run(lm_dir).params["model"]
    entry = run.params[text_encoder.ENTRY]["model"]
    assert not pytree.mismatch(entry, lm_params)
    for x, y in zip(jax.tree.leaves(entry), jax.tree.leaves(lm_params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Not trained: the raw params hold the same entry, the EMA does not copy it.
    raw = checkpoint.open_run(workdir, ema=False).params[text_encoder.ENTRY]
    for x, y in zip(jax.tree.leaves(raw), jax.tree.leaves(entry)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    recorded = checkpoint.load_config(workdir)
    assert recorded.text.model == checkpoint.load_config(lm_dir).model


def test_padding_never_changes_an_output(runs):
    """Garbage token ids on the padding, or a longer padding, change nothing:
    the causal encoder never reads later positions and the masks keep them
    out of the cross-attention and the pooled caption."""
    _, workdir, _ = runs
    run = _opened(workdir)
    clean = _prompts(run, ["a thick seven leaning right", "number two, small"])
    noisy = {k: v.copy() for k, v in clean.items()}
    pad = clean["text_mask"] == 0
    noisy["text_tokens"][pad] = np.random.default_rng(0).integers(1, 255, pad.sum())
    want = _generate(run, clean)
    np.testing.assert_array_equal(_generate(run, noisy), want)
    longer = _prompts(run, ["a thick seven leaning right", "number two, small"], 80)
    np.testing.assert_allclose(_generate(run, longer), want, atol=1e-5)
    # And the training loss: padding is invisible there too.
    batch = {"image": jnp.zeros((2, 8, 8, 1)), "label": jnp.zeros((2,), jnp.int32)}
    loss = jax.jit(run.family.losses["model"])
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        loss(run.params, batch | noisy, key)[0], loss(run.params, batch | clean, key)[0]
    )
    # The prompt does matter.
    other = _prompts(run, ["the digit 0, thin and upright"] * 2)
    assert not np.allclose(_generate(run, other), want)


def test_captions_drop_at_the_configured_rate():
    mask = jnp.ones((20_000, 5), bool)
    dropped = text_encoder.drop_captions(jax.random.key(0), mask, 0.1)
    rows = ~dropped.any(1)
    assert abs(float(rows.mean()) - 0.1) < 0.01
    assert bool((dropped == dropped[:, :1]).all())  # whole captions, never tokens
    assert bool(text_encoder.drop_captions(jax.random.key(0), mask, 0.0).all())


def test_guidance_against_the_null_caption(runs):
    """With the null caption as prompt, conditional = unconditional, so every
    guidance weight gives the same images; at weight 1 the unconditional
    branch cancels, so the negative prompt changes nothing: the unguided
    model."""
    _, workdir, _ = runs
    run = _opened(workdir)
    np.testing.assert_array_equal(
        _generate(run, guidance=1.0), _generate(run, guidance=4.0)
    )
    prompt = _prompts(run, ["a thick seven leaning right"] * 2)
    negative = _prompts(run, ["a thin one"] * 2)
    np.testing.assert_allclose(
        _generate(run, prompt, negative, guidance=1.0),
        _generate(run, prompt, None, guidance=1.0),
        atol=1e-5,
    )
    assert not np.allclose(
        _generate(run, prompt, negative, guidance=3.0),
        _generate(run, prompt, None, guidance=3.0),
        atol=1e-4,
    )


def test_a_text_to_image_run_resumes_exactly(runs, tmp_path):
    _, workdir, config = runs
    helpers.assert_resumes_exactly(workdir, config, tmp_path)


def test_the_prompts_evaluator_scores_held_out_captions(runs):
    _, workdir, _ = runs
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    (scores,) = [r for r in rows if "eval/prompts/heldout_combos/digit_accuracy" in r]
    for split in ("heldout_combos",):
        for name in ("digit_accuracy", "attribute_accuracy"):
            assert 0 <= scores[f"eval/prompts/{split}/{name}"] <= 1
        assert scores[f"eval/prompts/{split}/frechet_distance"] > 0
        assert scores[f"eval/prompts/{split}/num_samples"] == 16


def test_sample_draws_from_a_prompt(runs):
    _, workdir, _ = runs
    run = checkpoint.open_run(workdir)
    a = sample.images(run, num_samples=2, prompt="a thick seven leaning right")
    b = sample.images(run, num_samples=2, prompt="a thick seven leaning right")
    c = sample.images(run, num_samples=2, prompt="number two, small")
    assert a.shape == (2, 8, 8, 1) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prepare_copies_the_encoders_model_and_tokenizer(runs, tmp_path):
    lm_dir, _, _ = runs
    config = t2i_digits.get_config()  # the full-size encoder's model section
    config.text.encoder = lm_dir
    changed = families.prepare(config, checkpoint.load_config)
    assert "text.model" in changed
    assert config.text.model == checkpoint.load_config(lm_dir).model
    assert families.prepare(config, checkpoint.load_config) == []
    config.text.encoder = str(tmp_path / "missing")
    # The section repeated: a resumed run needs the encoder run no longer.
    assert families.prepare(config, checkpoint.load_config) == []
    config.text.model = {}
    with pytest.raises(FileNotFoundError, match="config.text.encoder=.*gen-jax train"):
        families.prepare(config, checkpoint.load_config)


def test_encoders_that_cannot_read_captions_are_refused(tmp_path):
    char = lm_shakespeare_char.get_config("smoke")
    config = t2i_digits.get_config("smoke")
    config.text.encoder = "lm"
    with pytest.raises(ValueError, match="char tokenizer"):
        text_encoder.prepare(config, lambda path: char)
    with pytest.raises(ValueError, match="language-model run"):
        text_encoder.prepare(config, lambda path: t2i_digits.get_config("smoke"))


def test_text_settings_are_checked():
    config = t2i_digits.get_config("smoke")
    config.model.text_conditioning = "none"
    with pytest.raises(ValueError, match="needs a denoiser that reads text"):
        families.make(config)
    config = t2i_digits.get_config("smoke")
    config.text.encoder = ""
    with pytest.raises(ValueError, match="needs config.text.encoder"):
        families.make(config)
    for key, value, match in (
        ("layer", 5, "config.text.layer=5"),
        ("drop_prob", 1.0, "drop_prob must be in"),
    ):
        config = t2i_digits.get_config("smoke")
        config.text[key] = value
        with pytest.raises(ValueError, match=match):
            families.make(config)


def test_an_earlier_layer_keeps_only_its_blocks():
    params = {f"block_{i}": {"k": np.zeros(1)} for i in range(3)}
    params |= {"embed": {}, "final_norm": {}, "unembed": {}}
    assert sorted(text_encoder._cut(params, 2)) == [
        "block_0",
        "block_1",
        "embed",
        "final_norm",
    ]
    assert "block_2" in text_encoder._cut(params, -1)


def test_two_prompts_in_one_batch_equal_their_solo_images(runs):
    """An image depends on its own key, prompt and negative prompt only (the
    server's micro-batches; it also pads them to one size, bitwise)."""
    _, workdir, _ = runs
    run = _opened(workdir)
    texts = ["a thick seven leaning right", "number two, small"]
    both = _generate(run, _prompts(run, texts))
    for i, caption in enumerate(texts):
        solo = np.asarray(
            jax.jit(run.family.generate)(
                run.params,
                image_keys(jax.random.key(0), 2)[i : i + 1],
                jnp.zeros((1,), jnp.int32),
                jnp.full((1,), 2.0),
                None,
                _prompts(run, [caption]),
            )
        )
        np.testing.assert_allclose(solo[0], both[i], atol=1e-5)
    assert not np.allclose(both[0], both[1], atol=1e-3)


@pytest.mark.slow
def test_an_imported_hugging_face_model_is_an_encoder(tmp_path):
    """The committed tiny Llama fixture, imported, conditions a smoke run:
    its tokenizer (BOS added) tokenizes the captions."""
    hf_workdir = str(tmp_path / "llama")
    result = helpers.gen_jax(
        "import-hf",
        f"--hf_dir={helpers.ROOT}/tests/fixtures/hf/llama",
        f"--workdir={hf_workdir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = t2i_digits.get_config("smoke")
    config.text.encoder = hf_workdir
    config.evals = {}
    workdir = str(tmp_path / "t2i")
    train.run(config, workdir)
    recorded = checkpoint.load_config(workdir)
    assert recorded.data.tokenizer == "hf"
    assert recorded.text.model == checkpoint.load_config(hf_workdir).model
    run = _opened(workdir)
    ids = _prompts(run, ["a thick seven leaning right"])
    assert (
        ids["text_tokens"][0, 0] == run.family.images.prompts.tokenizer.prompt("a")[0]
    )
    images = _generate(run, ids)
    assert images.shape == (1, 8, 8, 1) and np.isfinite(images).all()


@pytest.mark.slow
def test_the_latent_variant_composes_lm_vae_and_dit(runs, tmp_path):
    """t2i_digits:smoke,latent: the LM's features steer a DiT on the VAE's
    latents, both frozen entries loaded at step 0 and exported with it."""
    from configs import vae_latents_digits
    from gen_jax.families import latent

    lm_dir, _, _ = runs
    vae_dir = str(tmp_path / "vae")
    vae_config = vae_latents_digits.get_config("smoke")
    vae_config.evals = {}
    train.run(vae_config, vae_dir)
    config = t2i_digits.get_config("smoke,latent")
    config.latent.autoencoder, config.text.encoder = vae_dir, lm_dir
    config.evals = {}
    workdir = str(tmp_path / "t2i")
    train.run(config, workdir)
    run = _opened(workdir)
    assert {latent.AUTOENCODER, text_encoder.ENTRY} <= set(run.params)
    images = _generate(run, _prompts(run, ["a thick seven leaning right"]))
    assert images.shape == (1, 8, 8, 1) and np.abs(images).max() <= 1


def test_the_clip_evaluator_scores_samples_and_real_images(runs):
    """The CLIP score with a local HF CLIP (the committed tiny fixture), on a
    split's captions: the samples' and the real images'."""
    import types

    from configs import base
    from gen_jax import evaluate

    _, workdir, _ = runs
    run = checkpoint.open_run(workdir)
    cfg = base.clip_eval(
        weights=f"{helpers.ROOT}/tests/fixtures/hf/clip",
        split="test",
        num_samples=8,
        batch_size=4,
    )
    evaluator = evaluate.make(
        "clip", cfg, data_cfg=run.config.data, key=jax.random.key(0), family=run.family
    )
    out = evaluator(types.SimpleNamespace(sampling_params=run.params))
    assert out["num_samples"] == 8
    for name in ("clip_score", "real_clip_score"):
        assert 0 <= out[name] <= 100
    # The real images are scored against their own captions, decoded from
    # the run's tokens back to text for CLIP's tokenizer.
    from gen_jax import features

    rows = data.make_source(run.config.data, "test").batch(8)[0]
    source = captions.source("test", data._digits)
    texts = [source[i]["caption"] for i in range(8)]
    score = features.clip_scorer(cfg.weights)
    want = float(np.mean(score(rows["image"], texts)))
    assert want > 1 and out["real_clip_score"] == pytest.approx(want, rel=1e-5)
    assert out["clip_score"] != out["real_clip_score"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone,objective", [("unet", "ddpm"), ("dit", "edm")])
def test_text_steers_every_backbone_and_objective(backbone, objective):
    """Beside the flow DiT of the runs above: the UNet's cross-attention under
    DDPM and the DiT under EDM read the prompt (random encoder, perturbed
    denoiser, two sampler steps)."""
    from configs import ddpm_digits, edm_digits

    config = t2i_digits.get_config("smoke")
    if backbone == "unet":
        unet = ddpm_digits.get_config("smoke")
        config.model = unet.model
        config.model.update(text_conditioning="cross", text_heads=2)
    source = {"ddpm": ddpm_digits, "edm": edm_digits}[objective].get_config("smoke")
    config.diffusion = source.diffusion
    config.diffusion.update(conditional=False, sample_steps=2)
    if objective == "ddpm":
        config.diffusion.sampler = "ddim"
    family = families.make(config)
    batch = data.dummy_batch(config.data)
    params = family.init(jax.random.key(0), batch)
    params |= {"model": helpers.perturbed(params["model"])}
    params[text_encoder.ENTRY] = helpers.perturbed(params[text_encoder.ENTRY], 0.5)
    tokenizer = family.images.prompts.tokenizer

    def images(caption):
        ids = text.fixed_length([caption], tokenizer, config.data.caption_len)
        return jax.jit(family.generate)(
            params,
            image_keys(jax.random.key(0), 1),
            jnp.zeros((1,), jnp.int32),
            jnp.full((1,), 2.0),
            None,
            ids,
        )

    assert not np.allclose(images("a thick seven"), images("number two, small"))
    loss, _ = family.losses["model"](params, batch, jax.random.key(1))
    assert np.isfinite(loss)


@pytest.mark.slow
def test_a_lora_fine_tune_is_an_encoder_merged(tmp_path):
    """An SFT run's LoRA adapters are folded into its base (the run as it is
    deployed) before the text encoder entry is filled."""
    from configs import sft_pydoc

    sft_dir = str(tmp_path / "sft")
    sft_config = sft_pydoc.get_config("smoke")
    sft_config.evals = {}
    train.run(sft_config, sft_dir)
    config = t2i_digits.get_config("smoke")
    config.text.encoder = sft_dir
    config.evals = {}
    workdir = str(tmp_path / "t2i")
    train.run(config, workdir)
    merged = checkpoint.open_run(sft_dir).params["model"]
    entry = checkpoint.open_run(workdir).params[text_encoder.ENTRY]["model"]
    assert not pytree.mismatch(entry, merged)
    for x, y in zip(jax.tree.leaves(entry), jax.tree.leaves(merged)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
