"""The command-line tools: thin absl apps over the library, one per `gen-jax` command."""
