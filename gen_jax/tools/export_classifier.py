"""`gen-jax export-classifier --workdir=runs/classifier_mnist --out=runs/classifier_mnist.npz`.

Writes a trained classifier run (EMA params and model fields) as the one .npz
the `classifier` features of the quality evaluator load (`weights=...`).
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_workdir("A trained classifier run's workdir.")
    flags.DEFINE_string("out", None, "The .npz to write.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("workdir", "out")
    from gen_jax import features

    features.save_classifier(FLAGS.workdir, FLAGS.out)
    print(f"wrote {FLAGS.out}")


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
