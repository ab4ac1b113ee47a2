"""2 processes x 2 CPU devices (gloo collectives) train like 1 process x 4 devices,
and their checkpoint restores in 1 process on 4 devices or on 1."""

import importlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from gen_jax import sharding, train
from tests import helpers
from tests.test_checkpoint import _restore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae_digits", "lm_pydoc"])  # image and text paths
def test_two_processes_match_one_process(name, tmp_path):
    smoke_config = importlib.import_module(f"configs.{name}").get_config("smoke")
    smoke_config.train.log_every_steps = 1
    reference = train.run(smoke_config, str(tmp_path / "one"))
    _, reference_data_state = _restore(smoke_config, str(tmp_path / "one"))
    workdir = str(tmp_path / "two")
    args = [
        f"--config=configs/{name}.py:smoke",
        "--config.train.log_every_steps=1",
        f"--workdir={workdir}",
    ]
    # Through launch/local.sh: the launcher users run on a laptop.
    env = helpers.cli_env() | {
        "PORT": str(_free_port()),
        "PYTHON": sys.executable,
        "LOG_DIR": str(tmp_path / "logs"),
    }
    launch = subprocess.run(
        ["bash", "launch/local.sh", "2", "2", "--", *args],
        cwd=helpers.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").iterdir()))
    assert launch.returncode == 0, launch.stderr + logs

    one, two = (
        helpers.train_losses(str(tmp_path / "one")),
        helpers.train_losses(workdir),
    )
    steps = smoke_config.train.num_steps
    assert sorted(one) == sorted(two) == list(range(1, steps + 1))
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=1e-5)
    # The checkpoint written by two processes restores in one process, onto its
    # 4 devices and onto 1 device, with the data position of step `steps`.
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = sharding.make_mesh(smoke_config.mesh, devices)
        restored, data_state = _restore(smoke_config, workdir, mesh)
        assert len(jax.tree.leaves(restored.params)[0].sharding.device_set) == len(
            devices
        )
        assert int(restored.step) == steps
        for a, b in zip(
            jax.tree.leaves(restored.params), jax.tree.leaves(reference.params)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert data_state == reference_data_state
