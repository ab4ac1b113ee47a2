import os

import ml_collections
import numpy as np
import pytest

from configs import classifier_digits, gan_digits
from gen_jax import data, evaluate, features, sample, train
from gen_jax.models import MODELS
from tests import helpers


def _digits_cfg(**overrides):
    cfg = gan_digits.get_config().data
    cfg.update(overrides)
    return cfg


def test_shipped_digits_classifier_classifies_held_out_digits():
    # The features behind the Fréchet digits distance come from a real classifier.
    extract = features.make("digits_classifier", "", _digits_cfg())
    batch = next(iter(data.make_source(_digits_cfg(), "test").batch(300)))
    feats, logits = extract(batch["image"])
    assert feats.shape == (300, 128) and logits.shape == (300, 10)
    assert np.mean(np.argmax(logits, -1) == batch["label"]) > 0.95


def test_exported_classifier_loads_and_checks_shapes(tmp_path):
    config = classifier_digits.get_config("smoke")
    workdir, path = str(tmp_path / "run"), str(tmp_path / "clf.npz")
    train.run(config, workdir)
    features.save_classifier(workdir, path)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    got_feats, got_logits = features.make("classifier", path, _digits_cfg())(images)
    state, _ = sample.restore(workdir, train.setup(config))
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    want = MODELS["conv_classifier"](**kwargs).apply(
        {"params": state.ema_params["model"]}, images
    )
    np.testing.assert_allclose(got_feats, want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_logits, want[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expect images of shape \(8, 8, 1\)"):
        features.make("classifier", path, _digits_cfg(image_size=28))
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        features.make("classifier", missing, _digits_cfg())
    with pytest.raises(FileNotFoundError, match="inception"):
        features.make("inception", missing.replace("nope", "inception"), _digits_cfg())


def test_evaluate_entry_point_writes_metrics_and_real_data_scores_better(tmp_path):
    workdir = str(tmp_path)
    train.run(gan_digits.get_config("smoke"), workdir)  # 4 steps: still noise
    result = helpers.run_module(
        "gen_jax.evaluate",
        f"--workdir={workdir}",
        "--num_samples=96",
        "--batch_size=32",
    )
    assert result.returncode == 0, result.stderr
    rows = [r for r in helpers.read_metrics(workdir) if "eval/quality/kid" in r]
    assert rows[-1]["step"] == 4 and rows[-1]["eval/quality/num_samples"] == 96
    assert os.listdir(os.path.join(workdir, "quality_cache"))  # real features cached
    cfg = ml_collections.ConfigDict(
        evaluate.quality_config(num_samples=96, batch_size=32, kid_subset_size=96)
    )
    noise = evaluate.evaluate_workdir(workdir, cfg, name="noise")
    cfg.compare_split = "test"  # held-out real digits in place of samples
    real = evaluate.evaluate_workdir(workdir, cfg, name="real")
    assert real["frechet_distance"] < noise["frechet_distance"] / 2
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"]
    assert real["inception_score"] > 5 > noise["inception_score"]
