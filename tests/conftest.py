"""Test setup: 4 simulated CPU devices (set before JAX starts) and strict ranks."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def smoke_config():
  """The VAE digits smoke config, a fresh copy per test."""
  from configs import vae_digits

  return vae_digits.get_config("smoke")
