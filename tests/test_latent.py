"""Latent diffusion (families/latent.py) chained on a VAE smoke run: the
autoencoder loads at step 0 with its latent scale, samples decode to pixels,
the round trip is the VAE's own, and the run resumes exactly and exports.

The module trains its own two runs in process, on one xdist worker (its own
group, so it runs beside the shared CLI runs of the "trained" group)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ldm_digits, vae_latents_digits
from gen_jax import checkpoint, data, families, train
from gen_jax.families import latent, vae
from tests import helpers

pytestmark = pytest.mark.xdist_group("latent")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(VAE workdir, latent run workdir, its config): ldm_digits:smoke (with
    its quality eval, in pixel space) on a vae_latents_digits:smoke run."""
    vae_dir = str(tmp_path_factory.mktemp("vae") / "run")
    vae_config = vae_latents_digits.get_config("smoke")
    vae_config.evals = {}
    train.run(vae_config, vae_dir)
    config = ldm_digits.get_config("smoke")
    config.latent.autoencoder = vae_dir
    workdir = str(tmp_path_factory.mktemp("ldm") / "run")
    train.run(config, workdir)
    return vae_dir, workdir, config


def test_the_autoencoder_and_its_scale_load_at_step_0(runs):
    vae_dir, workdir, config = runs
    run = checkpoint.open_run(workdir)
    vae_params = checkpoint.open_run(vae_dir).params["model"]
    ae = run.params[latent.AUTOENCODER]
    for x, y in zip(jax.tree.leaves(ae["model"]), jax.tree.leaves(vae_params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # and frozen
    recorded = checkpoint.load_config(workdir).latent.scale
    assert recorded == pytest.approx(float(ae["scale"]), rel=1e-6)
    # 1 / std of the posterior means of the first training batches.
    it = data.make_train(config.data, batch_size=config.train.batch_size, mesh=run.mesh)
    batches = [next(it) for _ in range(config.latent.scale_batches)]
    model = vae.make_model(config.latent.model, config.data)
    means = [
        model.apply({"params": vae_params}, b["image"], method=model.encode)[0]
        for b in batches
    ]
    np.testing.assert_allclose(
        float(jnp.std(jnp.stack(means) * ae["scale"])), 1.0, rtol=1e-4
    )


def test_samples_are_decoded_pixels_and_the_round_trip_is_the_vaes(runs):
    vae_dir, workdir, _ = runs
    run = checkpoint.open_run(workdir)
    images = jax.jit(run.family.sample, static_argnums=2)(
        run.params, jax.random.key(0), 4
    )
    assert images.shape == (4, 8, 8, 1) and np.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1
    vae_run = checkpoint.open_run(vae_dir)
    batch = {"image": jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=-1)}
    # Scaling the latents and unscaling them before decoding cancels.
    np.testing.assert_allclose(
        run.family.reconstruct(run.params, batch, None),
        vae_run.family.reconstruct(vae_run.params, batch, None),
        atol=1e-5,
    )


def test_a_latent_run_resumes_exactly(runs, tmp_path):
    _, workdir, config = runs
    helpers.assert_resumes_exactly(workdir, config, tmp_path)


def test_latent_needs_a_continuous_objective_and_a_latent_image(runs):
    _, _, config = runs
    c = config.copy_and_resolve_references()
    c.diffusion.update(objective="ddpm", sampler="ddim")
    with pytest.raises(ValueError, match="needs a continuous objective"):
        families.make(c)
    c = config.copy_and_resolve_references()
    c.latent.model.spatial = False
    with pytest.raises(ValueError, match="spatial=True"):
        families.make(c)


def test_a_latent_run_exports_with_its_autoencoder(runs, tmp_path):
    """The artifact carries the frozen autoencoder and its scalar scale."""
    from gen_jax.deploy import artifact, export

    _, workdir, _ = runs
    export.export_run(checkpoint.open_run(workdir), str(tmp_path / "art"))
    assert artifact.Artifact(str(tmp_path / "art")).check_examples() == []
