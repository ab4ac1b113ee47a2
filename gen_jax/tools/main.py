"""`gen-jax COMMAND [flags]`: the one dispatcher over the tools.

A bare `gen-jax --config=...` (and `python -m gen_jax.main --config=...`) trains.
"""

import importlib
import sys

# command -> (tool module, one line of help)
COMMANDS = {
    "train": ("train", "train or resume a run from a config"),
    "sample": ("sample", "images or LM completions from a run's newest checkpoint"),
    "evaluate": ("evaluate", "sample-quality metrics (FD, KID, IS, P/R) of a run"),
    "bench": ("bench", "time a config's train step or sampler"),
    "export-classifier": (
        "export_classifier",
        "write a trained classifier run as the features .npz the evaluators load",
    ),
    "import-hf": (
        "import_hf",
        "a local Hugging Face decoder (Llama, Mistral, Qwen2/3) as a gen_jax workdir",
    ),
    "export-hf": (
        "export_hf",
        "an LM run as a Hugging Face directory (with a PEFT adapter for LoRA runs)",
    ),
    "export": (
        "export",
        "a run as a jax.export artifact (sampler, or LM prefill/decode) and its params",
    ),
    "serve": (
        "serve",
        "an OpenAI-compatible HTTP server for a run or an export artifact",
    ),
    "sweep": (
        "sweep",
        "hyper-parameter search on Optuna: trials are runs, pruned, many workers",
    ),
    "convert-inception": (
        "convert_inception",
        "convert pytorch-fid's InceptionV3 weights for the inception features",
    ),
}


def _overview() -> str:
    lines = ["usage: gen-jax COMMAND [flags]   (gen-jax COMMAND --help for its flags)"]
    lines += [f"  {name:<18} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("A bare `gen-jax --config=... --workdir=...` trains.")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> None:
    """The `gen-jax` console script."""
    argv = list(sys.argv if argv is None else argv)
    command = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    if command is None and any(a in ("--help", "-h") for a in argv[1:]):
        print(_overview())
        return
    if command is not None and command not in COMMANDS:
        print(
            f"error: unknown command {command!r}; valid: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    name = command or "train"
    tool = importlib.import_module(f"gen_jax.tools.{COMMANDS[name][0]}")
    tool.cli([f"gen-jax {name}"] + argv[(2 if command else 1) :])


if __name__ == "__main__":
    cli()
