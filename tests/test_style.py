import shutil
import subprocess

import pytest

from tests import helpers


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_is_clean(command):
    paths = ["gen_jax", "configs", "tests"]
    result = subprocess.run(
        ["ruff", *command, *paths],
        cwd=helpers.ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
