"""`gen-jax convert-inception --torch_weights=pt_inception-2015-12-05-6726825d.pth`.

Converts pytorch-fid's InceptionV3 weights (the FID network) into the .npz the
`inception` features load (default ~/.cache/gen_jax/inception_fid.npz). Needs
torch for this step only: pip install torch.
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("torch_weights", None, "pytorch-fid's .pth file.")
    flags.DEFINE_string(
        "out", "~/.cache/gen_jax/inception_fid.npz", "The .npz to write."
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("torch_weights")
    from gen_jax.models import inception

    print(f"wrote {inception.convert_file(FLAGS.torch_weights, FLAGS.out)}")


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
