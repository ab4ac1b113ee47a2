import glob
import importlib
import os
import shutil

import pytest

from gen_jax import train
from tests import helpers

CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(helpers.ROOT, "configs", "*.py"))
    if not p.endswith(("base.py", "__init__.py"))
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_smoke_variant_runs_end_to_end(name, tmp_path):
    module = importlib.import_module(f"configs.{name}")
    full = module.get_config()
    assert full.family and full.model.name and full.train.num_steps > 100
    assert module.__doc__ and "--workdir" in module.__doc__  # the command to run it
    config = module.get_config("smoke")
    if config.data.name not in ("digits", "pydoc"):  # embedded data stays
        config.data.name = "synthetic"
    workdir = str(tmp_path)
    state = train.run(config, workdir)
    assert int(state.step) == config.train.num_steps
    files = os.listdir(workdir)
    assert {"checkpoints", "config.json", "metrics.jsonl"} <= set(files)
    assert any(f.startswith("events.out.tfevents") for f in files)
    if "samples" in config.evals:
        assert any(f.startswith("eval_samples_samples") for f in files)
    last = helpers.read_metrics(workdir)
    for evaluator in [n for n, e in config.evals.items() if e.type != "samples"]:
        assert any(k.startswith(f"eval/{evaluator}/") for r in last for k in r)
    losses = {"gan": ["disc/loss", "gen/loss"]}.get(config.family, ["model/loss"])
    assert all(k in r for r in last if "steps_per_sec" in r for k in losses)


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
        1,
    )
    assert "unknown config.family 'vea'" in line


@pytest.mark.skipif(shutil.which("gen-jax") is None, reason="package not installed")
def test_console_script_is_the_same_cli():
    import subprocess

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
