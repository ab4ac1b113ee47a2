import glob
import importlib
import os
import shutil
import subprocess
import sys

import jax
import pytest

from configs import base
from gen_jax import build, data, families
from gen_jax.models import MODELS
from tests import helpers

CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(helpers.ROOT, "configs", "*.py"))
    if not p.endswith(("base.py", "__init__.py"))
)
# Written out, not read from configs/base.py: the test states the contract.
NO_DOWNLOAD = ("digits", "digits_captions", "pydoc", "pydoc_qa", "synthetic")
# Every :smoke variant, and those of other variant flags.
SMOKE = [f"{n}:smoke" for n in CONFIGS] + ["gan_cifar10:smoke,dcgan"]
EVAL_BUILDERS = {
    "heldout": base.heldout_eval,
    "samples": base.samples_eval,
    "quality": base.quality_eval,
    "prompts": base.prompts_eval,
    "clip": base.clip_eval,
}


def _config(name: str, arg: str | None = None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_documents_its_command_and_smoke_needs_no_download(name):
    module = importlib.import_module(f"configs.{name}")
    assert module.__doc__ and "--workdir" in module.__doc__  # the command to run it
    full, smoke = module.get_config(), module.get_config("smoke")
    assert full.family and full.model.name and full.train.num_steps >= 100
    assert smoke.train.num_steps < 10
    assert smoke.data.name in NO_DOWNLOAD, smoke.data.name  # asserted, not overridden
    for config in (full, smoke):
        for eval_name, e in config.evals.items():  # every key an evaluator reads
            assert set(e) == set(EVAL_BUILDERS[e.type]()), eval_name


def test_loading_every_config_imports_neither_jax_nor_gen_jax():
    code = (
        "import importlib, sys\n"
        f"for name in {CONFIGS!r}:\n"
        "    module = importlib.import_module('configs.' + name)\n"
        "    module.get_config(); module.get_config('smoke')\n"
        "print(sorted(m for m in ('jax', 'gen_jax') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=helpers.ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _global_batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract global batch of `train.batch_size` rows."""
    one = jax.eval_shape(lambda: data.dummy_batch(config.data))
    rows = config.train.batch_size
    return {
        k: jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype) for k, x in one.items()
    }


def _shapes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize("variant", SMOKE)
def test_smoke_config_builds_abstractly(variant):
    """Family, mesh, init and train step trace for every :smoke config (no compile)."""
    config = _config(*variant.split(":"))
    setup = build.setup(config)
    state = jax.eval_shape(setup.init, setup.init_key)
    assert _shapes(state) == _shapes(setup.abstract_state)
    new_state, metrics = jax.eval_shape(
        setup.train_step,
        setup.abstract_state,
        _global_batch_spec(config),
        setup.step_key,
    )
    assert _shapes(new_state) == _shapes(setup.abstract_state)
    assert all(m.shape == () for m in metrics.values())
    assert {f"{role}/loss" for role in setup.family.roles} <= set(metrics)


@pytest.mark.parametrize(
    "arg, want",
    [
        ("smoke", (True, 16, 0.5, "a")),
        ("smoke=TRUE,batch=8", (True, 8, 0.5, "a")),
        ("smoke=no,scale=1e-3,tag=b", (False, 16, 1e-3, "b")),
        ("smoke=0", (False, 16, 0.5, "a")),
        ("smoke=Yes", (True, 16, 0.5, "a")),
        ("tag=", (False, 16, 0.5, "")),
    ],
)
def test_parse_arg_converts_by_the_default_type(arg, want):
    got = base.parse_arg(arg, smoke=False, batch=16, scale=0.5, tag="a")
    assert (got.smoke, got.batch, got.scale, got.tag) == want


@pytest.mark.parametrize(
    "arg, message",
    [
        ("smoke=ture", "smoke='ture' is not a bool; use one of true, 1, yes, false"),
        ("batch=eight", "batch='eight' is not a valid int"),
        ("batch", "'batch' needs a value"),
        ("smok", "unknown config argument 'smok'; valid: batch, smoke"),
    ],
)
def test_parse_arg_rejects_bad_values_and_unknown_variants(arg, message):
    with pytest.raises(ValueError) as e:
        base.parse_arg(arg, smoke=False, batch=16)
    assert message in str(e.value)


def test_eval_builders_reject_undeclared_keys():
    with pytest.raises(ValueError, match="unknown keys \\['batch_sise'\\]"):
        base.heldout_eval(batch_sise=8)


@pytest.mark.parametrize(
    "name, key, value, valid",
    [
        ("vae_digits", "vae.likelihood", "poisson", "bernoulli, gaussian"),
        ("ddpm_digits", "diffusion.prediction", "epz", "eps, v, x0"),
        ("ddpm_digits", "diffusion.sampler", "eulr", "ddim, ddpm, dpm_solver_pp_2m"),
        ("ddpm_digits", "diffusion.objective", "score", "ddpm, edm, flow"),
        ("gan_digits", "gan.loss", "hinj", "hinge, non_saturating, wgan_gp"),
        ("gan_digits", "model.gen_norm", "batch", "group, none"),
        ("lm_pydoc", "model.norm", "batch", "layer, rms"),
        ("classifier_digits", "model.name", "convnet", ", ".join(sorted(MODELS))),
    ],
)
def test_a_bad_name_fails_at_make_time_with_the_valid_ones(name, key, value, valid):
    config = _config(name, "smoke")
    config.update_from_flattened_dict({key: value})
    with pytest.raises(ValueError) as e:
        families.make(config)
    assert str(e.value) == f"unknown config.{key} {value!r}; valid: {valid}"


def _one_line_error(result, rc: int) -> str:
    assert result.returncode == rc, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def test_misspelled_key_names_it_and_the_nearest_valid_key():
    line = _one_line_error(
        helpers.cli(
            "--config=configs/vae_digits.py:smoke",
            "--workdir=/tmp/unused",
            "--config.optim.model.lrr=1e-3",
        ),
        2,
    )
    assert "config.optim.model.lrr" in line and "config.optim.model.lr?" in line


def test_wrong_type_names_the_key():
    line = _one_line_error(
        helpers.cli(
            "--config=configs/vae_digits.py:smoke",
            "--workdir=/tmp/unused",
            "--config.train.num_steps=ten",
        ),
        2,
    )
    assert "config.train.num_steps" in line


def test_unknown_family_is_one_line_before_compiling(tmp_path):
    line = _one_line_error(
        helpers.cli(
            "--config=configs/vae_digits.py:smoke",
            f"--workdir={tmp_path}",
            "--config.family=vea",
        ),
        2,  # a config error
    )
    assert "unknown config.family 'vea'" in line


@pytest.mark.skipif(shutil.which("gen-jax") is None, reason="package not installed")
def test_console_script_is_the_same_cli():
    result = subprocess.run(
        [
            "gen-jax",
            "--config=configs/vae_digits.py",
            "--workdir=/tmp/unused",
            "--config.train.num_stepz=3",
        ],
        cwd=helpers.ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert "did you mean config.train.num_steps?" in _one_line_error(result, 2)
