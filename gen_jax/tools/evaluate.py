"""`gen-jax evaluate --workdir=DIR [flags]`: sample quality of a run's newest
checkpoint (EMA params): Fréchet distance, KID, Inception Score, precision and
recall, written to its metrics.jsonl and TensorBoard as eval/<name>/...

  gen-jax evaluate --workdir=runs/gan_digits --num_samples=1000
  gen-jax evaluate --workdir=runs/gan_digits --compare_split=test --num_samples=300 --name=floor
  gen-jax evaluate --workdir=runs/gan_cifar10 --features=inception --num_samples=50000
  gen-jax evaluate --workdir=runs/t2i_digits --type=prompts --guidance=3

Diffusion runs take --sampler --sampler_steps --guidance --eta.
"""

import types

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_workdir("A training run's workdir.")
    tool_flags.define_num_samples(1000, "Samples to score.")
    tool_flags.define_seed()
    tool_flags.define_sampler()
    flags.DEFINE_enum(
        "type",
        "quality",
        ["quality", "prompts"],
        "quality: sample quality; prompts: a text-to-image run's prompt "
        "adherence on held-out captions (digit and attribute accuracy, "
        "Fréchet distance).",
    )
    flags.DEFINE_list(
        "splits",
        ["test", "heldout_phrasings", "heldout_combos"],
        "--type=prompts: the caption splits to sample from ('train' too: its "
        "captions follow the train split's attributes, as a class-conditional "
        "run's cycled labels follow its classes).",
    )
    flags.DEFINE_string("name", None, "Metric prefix: eval/<name>/ (default: --type).")
    flags.DEFINE_integer("batch_size", 100, "Sampling and feature batch.")
    flags.DEFINE_enum(
        "features",
        "digits_classifier",
        ["digits_classifier", "classifier", "inception"],
        "The feature extractor.",
    )
    flags.DEFINE_string("weights", "", "The extractor's weights file ('' = default).")
    flags.DEFINE_string(
        "reference_split", "", "The real split to compare with ('' = train split)."
    )
    flags.DEFINE_string(
        "compare_split", "", "Score this real split in place of samples (the floor)."
    )
    flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size (capped at N).")
    flags.DEFINE_integer("pr_k", 3, "k-NN radius for precision / recall.")


def _eval_config():
    import ml_collections

    if FLAGS.type == "prompts":  # the run's guidance: --guidance sets it
        return ml_collections.ConfigDict(
            {
                "type": "prompts",
                "every_steps": 1,
                "splits": tuple(FLAGS.splits),
                "num_samples": FLAGS.num_samples,
                "batch_size": FLAGS.batch_size,
                "guidance": -1.0,
                "features": FLAGS.features,
                "weights": FLAGS.weights,
                "reference_split": FLAGS.reference_split,
            }
        )
    return ml_collections.ConfigDict(
        {
            "type": "quality",
            "every_steps": 1,
            "num_samples": FLAGS.num_samples,
            "batch_size": FLAGS.batch_size,
            "features": FLAGS.features,
            "weights": FLAGS.weights,
            "kid_subset_size": min(FLAGS.kid_subset_size, FLAGS.num_samples),
            "pr_k": FLAGS.pr_k,
            "reference_split": FLAGS.reference_split,
            "compare_split": FLAGS.compare_split,
        }
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir")
    import jax
    import numpy as np

    from gen_jax import build, checkpoint, metrics

    config = checkpoint.load_config(FLAGS.workdir)
    tool_flags.apply_sampler_overrides(config, FLAGS.workdir)
    run = checkpoint.open_run(FLAGS.workdir, config=config)
    name = FLAGS.name or FLAGS.type
    config.evals = {name: _eval_config()}
    ((_, evaluator),) = build.make_evaluators(
        config, run.family, run.mesh, jax.random.key(FLAGS.seed), FLAGS.workdir
    ).values()
    # The quality evaluator reads only the EMA params: the opened run's.
    results = evaluator(types.SimpleNamespace(sampling_params=run.params))
    writer = metrics.Writer(FLAGS.workdir)
    try:
        writer.write_eval(run.step, name, results)
    finally:
        writer.close()
    scalars = {k: v for k, v in results.items() if np.ndim(v) == 0}
    print(f"step {run.step}: " + " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
