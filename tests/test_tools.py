"""The command line, as a user runs it: `gen-jax COMMAND --help`, one training
run per family through the console script (shared with the other tests), sample
and evaluate on those runs, and bad input that ends in one line."""

import importlib
import os

import numpy as np
import pytest

from gen_jax.tools import main as tools_main
from tests import helpers

FAMILIES = ["vae_digits", "ddpm_digits", "gan_digits", "lm_pydoc", "classifier_digits"]


def test_every_command_has_help():
    overview = helpers.gen_jax("--help", devices=1)
    assert overview.returncode == 0 and "evaluate" in overview.stdout
    for command in tools_main.COMMANDS:
        result = helpers.gen_jax(command, "--help", devices=1)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert f"gen-jax {command}" in result.stdout and "traceback" in result.stdout


@pytest.mark.parametrize("name", FAMILIES)
def test_train_cli_runs_each_family_end_to_end(trained, name):
    workdir = trained(name)
    files = os.listdir(workdir)
    assert {"checkpoints", "config.json", "metrics.jsonl"} <= set(files)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert any(f.startswith("events.out.tfevents") for f in files)
    rows = helpers.read_metrics(workdir)
    losses = {"gan_digits": ["disc/loss", "gen/loss"]}.get(name, ["model/loss"])
    assert [r["step"] for r in rows if "steps_per_sec" in r] == [2, 4, 6]
    assert all(k in r for r in rows if "steps_per_sec" in r for k in losses)
    log = trained.log(name)
    assert "step 6/6" in log and "ETA" in log and "Traceback" not in log
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    for evaluator, cfg in config.evals.items():
        if cfg.type == "samples":
            assert "eval_samples_samples_6.png" in files
        else:
            assert any(k.startswith(f"eval/{evaluator}/") for r in rows for k in r)


def test_sample_cli_writes_diffusion_images_with_sampler_flags(trained):
    workdir = trained("ddpm_digits")
    flags = ["--sampler=dpm_solver_pp_2m", "--sampler_steps=3", "--guidance=2.0"]
    result = helpers.gen_jax(
        "sample", f"--workdir={workdir}", "--num_samples=8", "--seed=1", *flags
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prefix = result.stdout.strip().splitlines()[-1][: -len(".png")]
    assert os.path.basename(prefix).startswith("step6_seed1")
    images = np.load(prefix + ".npz")["images"]
    assert images.shape == (8, 8, 8, 1) and np.isfinite(images).all()
    assert os.path.exists(prefix + ".png")


def test_sample_cli_completes_lm_prompts_greedily(trained):
    workdir = trained("lm_pydoc")
    args = [f"--workdir={workdir}", "--prompt=The with", "--num_samples=2"]
    result = helpers.gen_jax("sample", *args, "--max_len=12", "--temperature=0")
    assert result.returncode == 0, result.stderr[-3000:]
    texts = result.stdout[:-1].split("\n\n=====\n\n")  # print adds one "\\n"
    assert len(texts) == 2 and texts[0] == texts[1]  # greedy: seeds do not matter
    assert texts[0].startswith("The with") and len(texts[0]) == 12  # bytes


def test_evaluate_cli_scores_samples_and_real_data_better(trained, tmp_path):
    workdir = trained.copy("gan_digits", tmp_path / "gan")
    common = [f"--workdir={workdir}", "--num_samples=96", "--batch_size=32"]
    noise = helpers.gen_jax("evaluate", *common, "--name=noise")
    assert noise.returncode == 0, noise.stderr[-3000:]
    real = helpers.gen_jax("evaluate", *common, "--compare_split=test", "--name=real")
    assert real.returncode == 0, real.stderr[-3000:]
    rows = [r for r in helpers.read_metrics(workdir) if "eval/noise/kid" in r]
    assert rows[-1]["step"] == 6 and rows[-1]["eval/noise/num_samples"] == 96
    noise = {k[len("eval/noise/") :]: v for k, v in rows[-1].items() if "noise" in k}
    (real,) = [r for r in helpers.read_metrics(workdir) if "eval/real/kid" in r]
    real = {k[len("eval/real/") :]: v for k, v in real.items() if "real" in k}
    assert os.listdir(os.path.join(workdir, "quality_cache"))  # real features cached
    assert real["frechet_distance"] < noise["frechet_distance"] / 2
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"]
    assert real["inception_score"] > 5 > noise["inception_score"]


def _one_line_error(result, rc: int) -> str:
    assert result.returncode == rc, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def test_bad_input_ends_in_one_line_with_exit_2(trained, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        ("--config=configs/nope.py", "--workdir=x"): "configs/nope.py' not found",
        (
            "--config=configs/vae_digits.py:smok",
            "--workdir=x",
        ): "unknown config argument 'smok'",
        ("--config=configs/vae_digits.py:smoke", f"--workdir={a_file}"): "is a file",
        ("sample", f"--workdir={tmp_path / 'nowhere'}"): "config.json not found",
        ("smaple", "--workdir=x"): "unknown command 'smaple'",
        ("sample",): "--workdir required",
    }
    for args, message in cases.items():
        assert message in _one_line_error(helpers.gen_jax(*args, devices=1), 2), args


def test_resuming_with_a_changed_model_is_one_line_and_moves_nothing(trained, tmp_path):
    workdir = trained.copy("vae_digits", tmp_path / "vae")
    result = helpers.gen_jax(
        "train",
        "--config=configs/vae_digits.py:smoke",
        f"--workdir={workdir}",
        "--config.model.hidden=48",
    )
    line = _one_line_error(result, 2)
    assert "written by another config" in line and "use a new --workdir" in line
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_damaged"))
