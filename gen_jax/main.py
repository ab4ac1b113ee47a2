"""`python -m gen_jax.main ...`: the same as the `gen-jax` command (see gen_jax/tools)."""

from gen_jax.tools.main import cli

if __name__ == "__main__":
    cli()
