import jax
import numpy as np
import pytest

from configs import gan_digits
from gen_jax import checkpoint, data, features
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


@pytest.mark.slow
def test_exported_classifier_loads_and_checks_shapes(trained, tmp_path):
    workdir, path = trained("classifier_digits"), str(tmp_path / "clf.npz")
    result = helpers.gen_jax(
        "export-classifier", f"--workdir={workdir}", f"--out={path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    got_feats, got_logits = features.make("classifier", path, _digits_cfg())(images)
    run = checkpoint.open_run(workdir)
    want = run.family.apply(run.params, {"image": images}, jax.random.key(0))
    np.testing.assert_allclose(got_logits, want, rtol=1e-5, atol=1e-6)
    assert got_feats.shape == (4, 16)
    with pytest.raises(ValueError, match=r"expect images of shape \(8, 8, 1\)"):
        features.make("classifier", path, _digits_cfg(image_size=28))
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        features.make("classifier", missing, _digits_cfg())
    with pytest.raises(FileNotFoundError, match="inception"):
        features.make("inception", missing.replace("nope", "inception"), _digits_cfg())
