import subprocess
import sys

from tests import helpers

MODULES = [
    "gen_jax",
    "gen_jax.models",
    "gen_jax.models.conv",
    "gen_jax.models.layers",
    "gen_jax.models.dcgan",
    "gen_jax.models.sngan",
    "gen_jax.models.inception",
    "gen_jax.families",
    "gen_jax.families.vae",
    "gen_jax.families.gan",
    "gen_jax.quality",
    "gen_jax.features",
    "gen_jax.step",
    "gen_jax.train_state",
    "gen_jax.optim",
    "gen_jax.sharding",
]


def test_importing_models_loads_no_tensorflow_and_touches_nothing(tmp_path):
    code = "".join(f"import {m}\n" for m in MODULES) + (
        "import os, sys\n"
        "import jax._src.xla_bridge as xla_bridge\n"
        "heavy = 'tensorflow' in sys.modules or 'torch' in sys.modules\n"
        "print(heavy, bool(xla_bridge._backends), os.listdir())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        text=True,
        check=False,
        capture_output=True,
        env={"PYTHONPATH": helpers.ROOT},
    )
    assert out.returncode == 0, out.stderr
    # No TensorFlow or torch, no backend initialised (no device work), no files written.
    assert out.stdout.split() == ["False", "False", "[]"], out.stdout
