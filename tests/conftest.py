"""Test setup: 4 simulated CPU devices (set before JAX starts) and strict ranks."""

import os

from tests import helpers  # imports no JAX: XLA_FLAGS must be set first

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {helpers.xla_flags(4)}"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# XLA:CPU compiles dominate this suite (seconds each, and every train.run
# builds fresh jitted closures): a persistent cache makes repeated programs
# free. It is also shared with the CLI subprocesses the tests start.
jax.config.update("jax_compilation_cache_dir", helpers.CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def smoke_config():
    """The VAE digits smoke config, a fresh copy per test."""
    from configs import vae_digits

    return vae_digits.get_config("smoke")
