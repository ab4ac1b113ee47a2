"""gen_jax: four generative families on one JAX train state, step and data pipeline."""

__version__ = "0.1.0"
