"""Every command in README.md (its ```bash blocks, and complete inline
`gen-jax ...` commands) is run: `gen-jax` commands as a
dry run (flags parsed, config loaded and overridden, nothing trained), those on
a workdir a shared smoke run provides for real, launchers with --dry-run. A
command of a kind not listed here fails the test, so none goes untested."""

import os
import re
import shlex
import subprocess

import pytest

from tests import helpers

# Commands no test here can run, each with the reason and where it is covered.
NOT_RUN = {
    "pip install": "the install itself: CI runs it before the suite",
    "python -m pytest": "the suite itself",
    'python -c "import tensorflow_datasets': "downloads a dataset",
    "tensorboard": "a server for the user's eyes",
    "optuna-dashboard": "a server for the user's eyes (on the storage "
    "tests/test_sweep.py reads back with optuna.load_study)",
    "sbatch": "needs a Slurm cluster (the script's dry run: tests/test_launch.py)",
    "python -m benchmarks.serve_load": "minutes of load on two servers; its pieces "
    "are tests/test_serve.py",
    "python -m benchmarks.text_to_image": "an hour of training on this CPU; its "
    "pieces are tests/test_text_to_image.py and tests/test_text_to_image_cli.py",
    "python -m benchmarks": "needs the bench extra (torch)",
    "python exports/": "needs an exported run; tests/test_export.py runs every "
    "family's load.py",
    "python tests/fixtures/make_hf.py": "needs the hf extra (torch, transformers)",
    "python3.12 -m venv": "a second Python and a 3 GB install: the by-hand check "
    "of a newer jax",
    ".venv312/bin/pip install": "that install",
    "PATH=$PWD/.venv312/bin:$PATH python -m pytest": "the suite itself, under it",
}
# README workdirs that the shared smoke runs stand in for (same config, :smoke).
SMOKE_RUNS = ("vae_digits", "ddpm_digits", "gan_digits", "lm_pydoc")


def _readme() -> str:
    with open(os.path.join(helpers.ROOT, "README.md")) as f:
        return f.read()


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined and
    `a && b` split, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", _readme(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    # Inline commands (the per-family table): every complete `gen-jax ...` span.
    inline = re.findall(r"`(gen-jax [^`]*--[^`]*)`", _readme())
    inline = [c for c in inline if "..." not in c and c.split()[1] != "COMMAND"]
    return commands + [c for c in inline if c not in commands]


def test_the_readme_has_commands_of_every_kind():
    commands = readme_commands()
    assert any(c.startswith("gen-jax sample") for c in commands)
    assert any(c.startswith("gen-jax evaluate") for c in commands)
    assert any(c.startswith("launch/") for c in commands)
    assert "pip install -e . && python -m gen_jax.main" in _readme()


def _workdir_run(args: list[str]) -> str | None:
    """The smoke run standing in for the command's --workdir=runs/NAME, if any."""
    for a in args:
        if (
            a.startswith("--workdir=runs/")
            and a[len("--workdir=runs/") :] in SMOKE_RUNS
        ):
            return a[len("--workdir=runs/") :]
    return None


def _kind(command: str) -> str:
    """not_run | launcher | real (on a shared smoke run) | dry_run."""
    if any(command.startswith(prefix) for prefix in NOT_RUN):
        return "not_run"
    args = shlex.split(command)
    if args[0].startswith("launch/"):
        return "launcher"
    if args[:3] == ["python", "-m", "gen_jax.main"]:
        args = ["gen-jax", *args[3:]]
    assert args[0] == "gen-jax", f"a README command of unknown kind: {command}"
    return (
        "real"
        if args[1] in ("sample", "evaluate") and _workdir_run(args)
        else "dry_run"
    )


def _gen_jax_args(command: str) -> list[str]:
    args = shlex.split(command)
    return args[3:] if args[:3] == ["python", "-m", "gen_jax.main"] else args[1:]


COMMANDS = readme_commands()


@pytest.mark.parametrize("command", [c for c in COMMANDS if _kind(c) == "not_run"])
def test_readme_commands_not_run_here_say_why(command):
    assert next(r for p, r in NOT_RUN.items() if command.startswith(p))


@pytest.mark.parametrize("command", [c for c in COMMANDS if _kind(c) == "launcher"])
def test_readme_launcher_command_dry_runs(command):
    args = shlex.split(command)
    result = subprocess.run(
        ["bash", args[0], "--dry-run", *args[1:]],
        cwd=helpers.ROOT,
        env=helpers.cli_env(1),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if _kind(c) == "dry_run"])
def test_readme_gen_jax_command_dry_runs(command):
    """Flags parsed, the config loaded with its overrides; nothing trained."""
    result = helpers.gen_jax(*_gen_jax_args(command), "--dry_run", devices=1)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if _kind(c) == "real"])
def test_readme_sample_and_evaluate_commands_run_in_test_tools(command):
    """These run for real on the shared smoke runs, their outputs checked, in
    tests/test_tools.py; here: that each one is among those."""
    from tests.test_tools import README_RUN

    assert any(command.startswith(p) for p in README_RUN.values()), command
