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
    "gen_jax.data",
    "gen_jax.checkpoint",
    "gen_jax.sample",
    "gen_jax.evaluate",
    "gen_jax.build",
    "gen_jax.train",
    "gen_jax.bench",
    "gen_jax.main",
    "gen_jax.tools.main",
    "gen_jax.tools.flags",
    "gen_jax.tools.train",
    "gen_jax.tools.sample",
    "gen_jax.tools.evaluate",
    "gen_jax.tools.bench",
]


def test_importing_models_loads_no_tensorflow_and_touches_nothing(tmp_path):
    code = "".join(f"import {m}\n" for m in MODULES) + (
        "import os, sys\n"
        "import jax._src.xla_bridge as xla_bridge\n"
        "heavy = 'tensorflow' in sys.modules or 'torch' in sys.modules\n"
        "from absl import flags\n"
        "defined = [f for f in flags.FLAGS if f.startswith(('config', 'workdir'))]\n"
        "print(heavy, bool(xla_bridge._backends), os.listdir(), defined)\n"
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
    # No TensorFlow or torch, no backend initialised (no device work), no files
    # written, no flags defined (a tool defines its flags only when it runs).
    assert out.stdout.split() == ["False", "False", "[]", "[]"], out.stdout
