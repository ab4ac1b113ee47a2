"""The command line, as a user runs it: `gen-jax COMMAND --help`, one training
run per family through the console script (shared with the other tests), sample
and evaluate on those runs, and bad input that ends in one line."""

import importlib
import os
import shlex

import numpy as np
import pytest

from gen_jax.tools import main as tools_main
from tests import helpers
from tests.test_readme import readme_commands

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
    rows = helpers.read_metrics(workdir)
    losses = {"gan_digits": ["disc/loss", "gen/loss"]}.get(name, ["model/loss"])
    assert [r["step"] for r in rows if "steps_per_sec" in r] == [2, 4, 6]
    assert all(k in r for r in rows if "steps_per_sec" in r for k in losses)
    # TensorBoard's own reader sees the logged scalars and the sample grids.
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(workdir)
    events.Reload()
    for k in losses:
        assert [e.step for e in events.Scalars(k)] == [2, 4, 6]
        np.testing.assert_allclose(
            [e.value for e in events.Scalars(k)],
            [r[k] for r in rows if "steps_per_sec" in r],
            rtol=1e-6,
        )
    log = trained.log(name)
    assert "step 6/6" in log and "ETA" in log and "Traceback" not in log
    # The run imported clu's metrics and no TensorFlow (PYTHONPROFILEIMPORTTIME
    # lines: "import time: self | cumulative | module").
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:")
    }
    assert "clu.metrics" in imported
    assert not {m for m in imported if m.split(".")[0] == "tensorflow"}
    # One steps/s: the progress line shows what metrics.jsonl logs.
    last = [r for r in rows if "steps_per_sec" in r][-1]
    assert f"{last['steps_per_sec']:.1f} steps/s" in log
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    for evaluator, cfg in config.evals.items():
        if cfg.type == "samples":
            assert "eval_samples_samples_6.png" in files
            (grid,) = events.Images(f"eval/{evaluator}/samples")
            assert grid.step == 6 and grid.encoded_image_string.startswith(b"\x89PNG")
        else:
            assert any(k.startswith(f"eval/{evaluator}/") for r in rows for k in r)


def _readme_run(trained, tmp_path, prefix: str):
    """Runs the README's command that starts with `prefix` on a copy of the
    smoke run its --workdir=runs/NAME names (tests/test_readme.py counts on
    these tests to run the README's sample and evaluate commands for real)."""
    (command,) = [c for c in readme_commands() if c.startswith(prefix)]
    args = shlex.split(command)[1:]
    name = next(a.split("runs/")[1] for a in args if a.startswith("--workdir="))
    workdir = str(tmp_path / name)
    if not os.path.exists(workdir):  # a second command works on the same copy
        trained.copy(name, workdir)
    args = [f"--workdir={workdir}" if a.startswith("--workdir=") else a for a in args]
    result = helpers.gen_jax(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


# The README's sample and evaluate commands, run for real below (by prefix).
README_RUN = {
    "ddpm_sample": "gen-jax sample --workdir=runs/ddpm_digits",
    "lm_sample": "gen-jax sample --workdir=runs/lm_pydoc",
    "gan_evaluate": "gen-jax evaluate --workdir=runs/gan_digits --num_samples=1000",
    "gan_floor": "gen-jax evaluate --workdir=runs/gan_digits --compare_split=test",
}


def test_sample_cli_writes_diffusion_images_with_sampler_flags(trained, tmp_path):
    _, result = _readme_run(trained, tmp_path, README_RUN["ddpm_sample"])
    prefix = result.stdout.strip().splitlines()[-1][: -len(".png")]
    name = os.path.basename(prefix)
    assert name.startswith("step6_seed0") and "sample_steps20" in name
    images = np.load(prefix + ".npz")["images"]
    assert images.shape == (64, 8, 8, 1) and np.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1
    assert os.path.exists(prefix + ".png")


def test_sample_cli_completes_lm_prompts(trained, tmp_path):
    workdir, result = _readme_run(trained, tmp_path, README_RUN["lm_sample"])
    texts = result.stdout[:-1].split("\n\n=====\n\n")  # print adds one "\\n"
    assert len(texts) == 2 and all(t.startswith("The with statement") for t in texts)
    assert texts[0] != texts[1]  # one seed per row, temperature 0.8
    (path,) = os.listdir(os.path.join(workdir, "samples"))
    assert path == "completions_step6_seed0.txt"


@pytest.mark.slow  # 1000 samples and the real floor: the README's evaluate commands
def test_evaluate_cli_scores_samples_and_real_data_better(trained, tmp_path):
    workdir, _ = _readme_run(trained, tmp_path, README_RUN["gan_evaluate"])
    _readme_run(trained, tmp_path, README_RUN["gan_floor"])  # on the same copy
    rows = helpers.read_metrics(workdir)
    (noise,) = [r for r in rows if "eval/quality/kid" in r and r["step"] == 6][-1:]
    assert noise["eval/quality/num_samples"] == 1000
    noise = {k[len("eval/quality/") :]: v for k, v in noise.items() if "quality" in k}
    (real,) = [r for r in rows if "eval/floor/kid" in r]
    real = {k[len("eval/floor/") :]: v for k, v in real.items() if "floor" in k}
    assert real["num_samples"] == 300
    assert os.listdir(os.path.join(workdir, "quality_cache"))  # real features cached
    assert real["frechet_distance"] < noise["frechet_distance"] / 2
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"]
    assert real["inception_score"] > 5 > noise["inception_score"]


@pytest.mark.parametrize("name", ["vae_digits", "ddpm_digits"])
def test_evaluate_cli_takes_any_number_of_samples(trained, tmp_path, name):
    """16 samples with the default batch of 100: one partial batch."""
    workdir = trained.copy(name, tmp_path / name)
    result = helpers.gen_jax("evaluate", f"--workdir={workdir}", "--num_samples=16")
    assert result.returncode == 0, result.stderr[-3000:]
    row = [r for r in helpers.read_metrics(workdir) if "eval/quality/kid" in r][-1]
    assert row["eval/quality/num_samples"] == 16
    assert np.isfinite(row["eval/quality/frechet_distance"])


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
