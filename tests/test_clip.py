"""CLIP (models/clip.py) read from a Hugging Face directory: the committed tiny
fixture (tests/fixtures/make_clip.py, made by `transformers`' CLIPModel) gives
HF's own embeddings, and features.clip_scorer scores images against captions."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from gen_jax import features
from gen_jax.models import clip
from tests import helpers

FIXTURE = f"{helpers.ROOT}/tests/fixtures/hf/clip"


@pytest.fixture(scope="module")
def model():
    with open(f"{FIXTURE}/config.json") as f:
        config = json.load(f)
    t, v = config["text_config"], config["vision_config"]
    layers = {"text": t["num_hidden_layers"], "vision": v["num_hidden_layers"]}
    params = clip.params_from_hf(load_file(f"{FIXTURE}/model.safetensors"), layers)
    return clip.CLIP(t, v, config["projection_dim"]), params


def test_embeddings_match_transformers(model):
    module, params = model
    want = np.load(f"{FIXTURE}/expected.npz")
    pixels = want["pixel_values"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    init = jax.eval_shape(module.init, jax.random.key(0), want["input_ids"], pixels)
    assert jax.tree.structure(init["params"]) == jax.tree.structure(params)
    text, image = jax.jit(module.apply)({"params": params}, want["input_ids"], pixels)
    np.testing.assert_allclose(text, want["text_embeds"], atol=1e-5)
    np.testing.assert_allclose(image, want["image_embeds"], atol=1e-5)
    scale = np.exp(load_file(f"{FIXTURE}/model.safetensors")["logit_scale"])
    logits = scale * np.asarray(image) @ np.asarray(text).T
    np.testing.assert_allclose(logits, want["logits_per_image"], rtol=1e-4)


def test_the_scorer_reads_the_directory_and_scores_pairs(model):
    module, params = model
    score = features.clip_scorer(FIXTURE)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    captions = ["a red bus on a city street", "two dogs", "a photo of a cat"]
    got = score(images, captions, batch=2)
    assert got.shape == (3,) and (got >= 0).all() and (got <= 100).all()
    # By hand: the tokenizer's framing, padded with end-of-text; images to RGB
    # at the model's size, normalised with the directory's mean and std.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{FIXTURE}/tokenizer.json")
    eos = module.text_config["eos_token_id"]
    ids = np.full((3, 24), eos, np.int32)
    for row, caption in enumerate(captions):
        encoded = tok.encode(caption).ids
        ids[row, : len(encoded)] = encoded
    x = jax.image.resize(
        np.repeat((images + 1) / 2, 3, axis=-1), (3, 16, 16, 3), "bicubic"
    )
    x = (x - np.reshape(features.CLIP_MEAN, (1, 1, 1, 3))) / np.reshape(
        features.CLIP_STD, (1, 1, 1, 3)
    )
    text, image = jax.jit(module.apply)({"params": params}, ids, x)
    want = 100 * np.maximum(np.sum(np.asarray(text) * np.asarray(image), -1), 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_directory_without_clip_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="local Hugging Face CLIP"):
        features.clip_scorer(str(tmp_path))
