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
    env = helpers.cli_env(devices=2) | {
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


@pytest.mark.slow
def test_distributed_flag_detects_a_slurm_job(tmp_path):
    """`--distributed` alone: jax.distributed.initialize() reads the cluster from
    the environment (here a faked 2-task Slurm step on localhost)."""
    # JAX derives the coordinator port from the job id: pick one that is free.
    port = _free_port_in(range(65535 - 2**12 + 1, 65536))
    slurm = {
        "SLURM_JOB_ID": str(port - (65535 - 2**12 + 1)),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": "2",
    }
    args = [
        "--distributed",
        "--config=configs/vae_digits.py:smoke",
        "--config.train.num_steps=2",
        "--config.train.log_every_steps=1",
        f"--workdir={tmp_path}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gen_jax.main", *args],
            cwd=helpers.ROOT,
            env=helpers.cli_env(devices=2)
            | slurm
            | {"SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    for i, (p, err) in enumerate(zip(procs, errors)):
        assert p.returncode == 0, err[-3000:]
        assert f"process {i} of 2, 2 local / 4 global devices" in err
    assert sorted(helpers.train_losses(str(tmp_path))) == [1, 2]


def _free_port_in(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")
