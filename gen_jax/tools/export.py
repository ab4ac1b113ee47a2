"""`gen-jax export --workdir=W --out=DIR [--platforms=cpu,cuda,tpu]`: a run's newest
EMA params (LoRA merged) as a `jax.export` artifact that a process with only jax,
numpy and safetensors runs (`python DIR/load.py DIR` checks it).

Image runs export `sample` (the sampler and its steps fixed: the diffusion
--sampler flags choose them; the number of images symbolic). LM runs export
`prefill` and `decode` over a KV cache of --context positions per slot, for a
server (`gen-jax serve --artifact=DIR`):

  gen-jax export --workdir=runs/ddpm_digits --out=exports/ddpm_digits \\
    --sampler=ddim --sampler_steps=50 --platforms=cpu,cuda,tpu
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_workdir("A training run's workdir.")
    tool_flags.define_sampler()
    flags.DEFINE_string("out", None, "The artifact directory to write.")
    flags.DEFINE_list("platforms", ["cpu"], "Lower for these: cpu, cuda, rocm, tpu.")
    flags.DEFINE_integer(
        "context", 0, "LM: KV-cache positions per slot (0: the run's data.seq_len)."
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir", "out")
    from gen_jax import checkpoint
    from gen_jax.deploy import export

    config = checkpoint.load_config(FLAGS.workdir)
    tool_flags.apply_sampler_overrides(config, FLAGS.workdir)
    run = checkpoint.open_run(FLAGS.workdir, config=config)
    files = export.export_run(
        run, FLAGS.out, platforms=FLAGS.platforms, context=FLAGS.context or None
    )
    print(
        f"wrote {len(files)} files to {FLAGS.out} (step {run.step}, "
        f"platforms {','.join(FLAGS.platforms)})"
    )


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
