"""Test setup: 4 simulated CPU devices (set before JAX starts), strict ranks, a
persistent compile cache, and the smoke runs every family's tests share."""

import os
import shutil

from tests import helpers  # imports no JAX: XLA_FLAGS must be set first

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {helpers.xla_flags(4)}"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# XLA:CPU compiles dominate this suite (seconds each, and every train.run
# builds fresh jitted closures): a persistent cache makes repeated programs
# free. It is also shared with the CLI subprocesses the tests start.
jax.config.update("jax_compilation_cache_dir", helpers.CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def smoke_config():
    """The VAE digits smoke config, a fresh copy per test."""
    from configs import vae_digits

    return vae_digits.get_config("smoke")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`trained(name)`: the workdir of `gen-jax train --config=configs/NAME.py:smoke`,
    run through the console script once per session (the family's end-to-end
    CLI run; tests/test_tools.py checks what it wrote and printed). Read it,
    or copy it (`trained.copy(name, dest)`) to change it."""
    runs = {}

    def get(name: str) -> str:
        if name not in runs:
            workdir = str(tmp_path_factory.mktemp(name) / "run")
            result = helpers.gen_jax(
                "train",
                f"--config=configs/{name}.py:smoke",
                f"--workdir={workdir}",
                # Every module imported, on stderr: what a run loads is checked.
                env={"PYTHONPROFILEIMPORTTIME": "1"},
            )
            assert result.returncode == 0, result.stderr[-3000:]
            runs[name] = (workdir, result)
        return runs[name][0]

    def log(name: str) -> str:
        get(name)
        return runs[name][1].stderr

    def copy(name: str, dest) -> str:
        shutil.copytree(get(name), str(dest), dirs_exist_ok=True)
        return str(dest)

    get.log, get.copy = log, copy
    return get


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """`exported(name)`: the artifact `gen-jax export` writes for `trained(name)`,
    lowered for cpu, cuda and tpu (the LM with a 48-position context)."""
    artifacts = {}

    def get(name: str) -> str:
        if name not in artifacts:
            out = str(tmp_path_factory.mktemp("export") / name)
            args = [f"--workdir={trained(name)}", f"--out={out}"]
            args += ["--platforms=cpu,cuda,tpu"] + (
                ["--context=48"] if name.startswith("lm") else []
            )
            result = helpers.gen_jax("export", *args)
            assert result.returncode == 0, result.stderr[-3000:]
            artifacts[name] = out
        return artifacts[name]

    return get


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`-n`, `--dist loadgroup`), the tests of one shared run
    go to one worker, so each smoke run trains once per session, not per worker."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained"))
