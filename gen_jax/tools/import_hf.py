"""`gen-jax import-hf --hf_dir=DIR --workdir=W [--dtype=float32]`: a local Hugging
Face decoder directory (config.json, safetensors, tokenizer.json) as a gen_jax
workdir: WORKDIR/config.json, a step-0 params checkpoint and WORKDIR/hf/.

Supported: LlamaForCausalLM (Llama 2/3, SmolLM2), MistralForCausalLM without a
sliding window, Qwen2ForCausalLM, Qwen3ForCausalLM. Then:

  gen-jax sample --workdir=W --prompt="def fib(n):" --temperature=0
  gen-jax train --config=configs/sft_hf.py:base=W --workdir=runs/sft
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS
DEFAULT_CONFIG = "configs/lm_pydoc.py"


def _define_flags() -> None:
    tool_flags.define_config(
        f"The LM config the model's fields are written over (data, mesh, ...); "
        f"default {DEFAULT_CONFIG}, from the repository root."
    )
    tool_flags.define_workdir("The new workdir to write.")
    flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory.")
    flags.DEFINE_string(
        "dtype", "float32", "Stored params: float32 | bfloat16 | float16."
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir", "hf_dir")
    from gen_jax import hf

    base = FLAGS.config or tool_flags.load_config_file(DEFAULT_CONFIG)
    config = hf.import_run(FLAGS.hf_dir, FLAGS.workdir, base, dtype=FLAGS.dtype)
    m = config.model
    print(
        f"wrote {FLAGS.workdir}: {m.num_layers} layers, width {m.embed_dim}, "
        f"{m.num_heads} heads / {m.num_kv_heads} kv heads, vocab {m.vocab_size}"
    )


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
