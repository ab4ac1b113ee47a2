"""`gen-jax sample --workdir=DIR [flags]`: samples from a run's newest checkpoint
(EMA params).

Image runs write a PNG grid and an .npz under WORKDIR/samples/; diffusion runs
take --sampler --sampler_steps --guidance --eta. LM runs complete --prompt and
print the completions (also written to WORKDIR/samples/):

  gen-jax sample --workdir=runs/ddpm_digits --num_samples=64 \\
    --sampler=ddim --sampler_steps=50 --guidance=2.0 --seed=0
  gen-jax sample --workdir=runs/lm_pydoc --prompt="The with statement" \\
    --num_samples=2 --max_len=300 --temperature=0.8 --top_k=40 --top_p=0.95

Text-to-image runs draw every image from --prompt, guided away from
--negative_prompt (default: the null caption):

  gen-jax sample --workdir=runs/t2i_digits --prompt="a thick seven leaning right" \\
    --guidance=3 --num_samples=16
"""

from absl import app, flags, logging

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_workdir("A training run's workdir.")
    tool_flags.define_num_samples(64)
    tool_flags.define_seed("Sampling seed (LM: row i uses seed + i).")
    tool_flags.define_sampler()
    flags.DEFINE_string(
        "prompt",
        None,
        "LM: the text to complete. Text-to-image: the caption every image is "
        "drawn from (none: the null caption, unconditional samples).",
    )
    flags.DEFINE_string(
        "negative_prompt",
        None,
        "Text-to-image: guidance steers away from it (in place of the null caption).",
    )
    flags.DEFINE_integer("max_len", 256, "LM: prompt + completion tokens.")
    flags.DEFINE_float("temperature", 1.0, "LM: 0 is greedy.")
    flags.DEFINE_integer("top_k", 0, "LM: keep the k likeliest tokens (0: off).")
    flags.DEFINE_float("top_p", 1.0, "LM: nucleus mass (1: off).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir")
    from etils import epath

    from gen_jax import checkpoint, sample

    config = checkpoint.load_config(FLAGS.workdir)
    overrides = tool_flags.apply_sampler_overrides(config, FLAGS.workdir)
    run = checkpoint.open_run(FLAGS.workdir, config=config)
    name = f"step{run.step}_seed{FLAGS.seed}"
    if run.family.text is not None:
        texts = sample.complete(
            run,
            "\n" if FLAGS.prompt is None else FLAGS.prompt,
            num_samples=FLAGS.num_samples,
            seed=FLAGS.seed,
            max_len=FLAGS.max_len,
            temperature=FLAGS.temperature,
            top_k=FLAGS.top_k,
            top_p=FLAGS.top_p,
        )
        text = "\n\n=====\n\n".join(texts)
        path = epath.Path(FLAGS.workdir) / "samples" / f"completions_{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(text)
        return
    try:
        images = sample.images(
            run,
            num_samples=FLAGS.num_samples,
            seed=FLAGS.seed,
            prompt=FLAGS.prompt,
            negative_prompt=FLAGS.negative_prompt,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    tag = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    if FLAGS.prompt is not None:  # one file per prompt: a slug of it
        tag += "_" + "".join(c if c.isalnum() else "-" for c in FLAGS.prompt)[:48]
    prefix = sample.write_images(FLAGS.workdir, images, name + tag)
    logging.info(
        "wrote %s.png and .npz (%d samples, step %d)", prefix, len(images), run.step
    )
    print(f"{prefix}.png")


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
