"""`gen-jax export-hf --workdir=W --out=DIR [--merge] [--dtype=float32]`: a run's
newest EMA params as a Hugging Face directory (config.json, safetensors,
tokenizer files) that `AutoModelForCausalLM.from_pretrained(DIR)` loads.

A LoRA run writes its base model and a PEFT adapter in DIR/adapter
(`PeftModel.from_pretrained(model, DIR/adapter)`); `--merge` writes the merged
weights instead.
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_workdir("An LM run with a Hugging Face tokenizer (import-hf).")
    flags.DEFINE_string("out", None, "The directory to write.")
    flags.DEFINE_bool("merge", False, "LoRA runs: write merged weights, no adapter.")
    flags.DEFINE_string(
        "dtype", "float32", "Stored weights: float32 | bfloat16 | float16."
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir", "out")
    from gen_jax import hf

    for path in hf.export_run(
        FLAGS.workdir, FLAGS.out, merge=FLAGS.merge, dtype=FLAGS.dtype
    ):
        print(f"wrote {path}")


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
