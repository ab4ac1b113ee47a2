"""The launchers' --dry-run commands: flags, worker selection and environment,
checked without a cloud account or a cluster. Each dry-run line is exactly the
command the launcher would run (shell-quoted), so these tests parse it."""

import os
import shlex
import signal
import subprocess
import time

import pytest

from tests import helpers

TRAIN = ["--config=configs/ddpm_cifar10.py", "--workdir=gs://bkt/runs/ddpm"]


def _launch(script: str, *args: str, env: dict | None = None, check: bool = True):
    return subprocess.run(
        ["bash", os.path.join(helpers.ROOT, "launch", script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def _commands(output: str) -> list[list[str]]:
    """The commands of a dry run, without comments or background redirections."""
    out = []
    for line in output.splitlines():
        if line.startswith("#"):
            continue
        words = shlex.split(line)
        out.append(words[: words.index(">")] if ">" in words else words)
    return out


def _flags(words: list[str]) -> dict[str, str]:
    return dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)


def _env(words: list[str]) -> dict[str, str]:
    """The VAR=value words of an `env VAR=value ... CMD` command."""
    assert words[0] == "env", words
    return dict(w.split("=", 1) for w in words[1:] if "=" in w and w[0] != "-")


def _check_train_command(words, *, process_id, num_processes, coordinator):
    """`env [VARS] python -m gen_jax.main TRAIN --coordinator_address=...`."""
    main = words.index("gen_jax.main")
    assert words[main - 1] == "-m"
    assert words[main + 1 : main + 1 + len(TRAIN)] == TRAIN  # flags passed verbatim
    flags = _flags(words[main:])
    assert flags["coordinator_address"] == coordinator
    assert flags["num_processes"] == str(num_processes)
    assert flags["process_id"] == str(process_id)


def test_local_dry_run_starts_n_processes_over_cpu_devices():
    result = _launch(
        "local.sh", "--dry-run", "3", "2", "--", *TRAIN,
        env={"PORT": "4321", "XLA_FLAGS": "--xla_dump_to=/tmp/d"},
    )  # fmt: skip
    commands = _commands(result.stdout)
    assert len(commands) == 3
    for i, words in enumerate(commands):
        env = _env(words)  # the caller's XLA flags are kept, the device count last
        assert env["XLA_FLAGS"] == (
            "--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=2"
        )
        _check_train_command(
            words, process_id=i, num_processes=3, coordinator="127.0.0.1:4321"
        )


@pytest.mark.parametrize("per_gpu", [False, True])
def test_gpu_sh_two_nodes_of_eight_gpus(per_gpu):
    opts = ["--per_gpu"] if per_gpu else []
    result = _launch(
        "gpu.sh", "--dry-run", *opts, "--remote_dir=/shared/gen_jax", "gpu01,gpu02",
        "--", *TRAIN, env={"TFDS_DATA_DIR": "gs://bkt/tfds"},
    )  # fmt: skip
    commands = _commands(result.stdout)
    n = 16 if per_gpu else 2
    assert len(commands) == n
    for i, words in enumerate(commands):
        host = "gpu01" if i < n // 2 else "gpu02"
        assert words[:4] == ["ssh", "-o", "BatchMode=yes", host]
        remote = words[4]
        subprocess.run(["bash", "-n", "-c", remote], check=True)  # valid shell
        cd, run = remote.split(" && exec ")
        assert cd == "cd /shared/gen_jax"
        run = shlex.split(run)
        env = _env(run)
        assert env["TFDS_DATA_DIR"] == "gs://bkt/tfds"
        if per_gpu:
            assert env["CUDA_VISIBLE_DEVICES"] == str(i % 8)
        else:  # one process drives all of the node's GPUs
            assert "CUDA_VISIBLE_DEVICES" not in env
        _check_train_command(
            run, process_id=i, num_processes=n, coordinator="gpu01:29500"
        )


def test_gpu_sh_refuses_localhost_as_coordinator_for_other_hosts():
    result = _launch(
        "gpu.sh", "--dry-run", "localhost,gpu02", "--", *TRAIN, check=False
    )
    assert result.returncode == 2 and "--coordinator=" in result.stderr
    result = _launch("gpu.sh", "--dry-run", "--gpus=8", "gpu01", "--", check=False)
    assert result.returncode == 2 and "unknown option --gpus=8" in result.stderr


def _fake_bin(tmp_path, name: str, script: str) -> dict[str, str]:
    """An environment with a fake `name` command first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/usr/bin/env bash\n" + script)
    (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_slurm_dry_run_inside_a_two_node_eight_gpu_job(tmp_path):
    env = _fake_bin(tmp_path, "scontrol", "echo gpu-a1; echo gpu-a2\n") | {
        "SLURM_JOB_ID": "31337",
        "SLURM_JOB_NODELIST": "gpu-a[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS": "16",
    }
    result = _launch("slurm_gpu.sbatch", "--dry-run", "--", *TRAIN, env=env)
    srun, *tasks = _commands(result.stdout)
    coordinator = f"gpu-a1:{20000 + 31337 % 20000}"
    assert srun[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert srun[srun.index("--") + 1 :] == TRAIN
    assert f"--coordinator={coordinator}" in srun and "--task" in srun
    assert len(tasks) == 16
    for i, words in enumerate(tasks):
        assert _env(words) == {"CUDA_VISIBLE_DEVICES": str(i % 8)}
        _check_train_command(
            words, process_id=i, num_processes=16, coordinator=coordinator
        )
    placement = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert placement[8] == "# task 8 on gpu-a2:"


@pytest.mark.parametrize(
    ("visible", "local_id", "tasks", "want"),
    [
        ("0,1,2,3,4,5,6,7", "3", "16", "3"),  # the node's GPUs: take ours
        ("4,5,6,7", "1", "8", "5"),
        ("", "6", "16", "6"),  # none listed: GPU SLURM_LOCALID
        ("2", "2", "16", "2"),  # Slurm bound one GPU to the task: keep it
        ("0,1,2,3,4,5,6,7", "0", "2", "0,1,2,3,4,5,6,7"),  # one task per node
    ],
)
def test_slurm_task_picks_its_gpu(tmp_path, visible, local_id, tasks, want):
    env = _fake_bin(
        tmp_path, "python3", 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES $*"\n'
    ) | {
        "SLURM_NNODES": "2",
        "SLURM_NTASKS": tasks,
        "SLURM_PROCID": "9",
        "SLURM_LOCALID": local_id,
        "CUDA_VISIBLE_DEVICES": visible,
    }
    args = ["--task", "--coordinator=gpu-a1:29500", "--", *TRAIN]
    out = _launch("slurm_gpu.sbatch", *args, env=env).stdout.split()
    assert out[0] == f"CUDA_VISIBLE_DEVICES={want}"
    _check_train_command(
        ["python3", *out[1:]], process_id=9, num_processes=tasks,
        coordinator="gpu-a1:29500",
    )  # fmt: skip


TPU = ["--name=gj", "--zone=us-west4-a"]


def test_tpu_vm_up_on_a_spot_v5e_16_queued_resource():
    result = _launch(
        "tpu_vm.sh", "--dry-run", "up", *TPU, "--type=v5litepod-16", "--queued",
        "--spot", "--workdir=gs://bkt/runs/lm", "--tfds_data_dir=gs://bkt/tfds",
        "--", "--config=configs/lm_lm1b.py",
    )  # fmt: skip
    create, describe, archive, scp, install, train = _commands(result.stdout)
    tpus = ["gcloud", "compute", "tpus"]
    assert create[:6] == [*tpus, "queued-resources", "create", "gj"]
    assert _flags(create) == {
        "node-id": "gj",
        "zone": "us-west4-a",
        "accelerator-type": "v5litepod-16",
        "runtime-version": "v2-alpha-tpuv5-lite",
    }
    assert "--spot" in create
    assert describe[:6] == [*tpus, "queued-resources", "describe", "gj"]
    assert archive[:2] == ["git", "-C"] and archive[-1] == "HEAD"
    assert scp[:5] == [*tpus, "tpu-vm", "scp"] and "--worker=all" in scp
    assert scp[5] == archive[archive.index("-o") + 1]
    for ssh in (install, train):
        assert ssh[:6] == [*tpus, "tpu-vm", "ssh", "gj"]
        assert _flags(ssh)["worker"] == "all"
        subprocess.run(["bash", "-n", "-c", _flags(ssh)["command"]], check=True)
    assert 'pip install -q -e ".[tpu]"' in _flags(install)["command"]
    remote = shlex.split(_flags(train)["command"])
    run = remote[remote.index("nohup") + 1 : remote.index(">")]
    assert run == [
        "env", "TFDS_DATA_DIR=gs://bkt/tfds", "python3", "-m", "gen_jax.main",
        "--distributed", "--workdir=gs://bkt/runs/lm", "--config=configs/lm_lm1b.py",
    ]  # fmt: skip


def test_tpu_vm_plain_create_ssh_logs_delete():
    def commands(*args):
        return _commands(_launch("tpu_vm.sh", "--dry-run", *args, *TPU).stdout)

    (create,) = commands("create", "--type=v4-32")
    assert create[3:6] == ["tpu-vm", "create", "gj"]
    assert _flags(create)["version"] == "tpu-ubuntu2204-base" and "--spot" not in create
    (ssh,) = commands("ssh", "--worker=3")
    assert _flags(ssh) == {"zone": "us-west4-a", "worker": "3"}
    (logs,) = commands("logs")
    assert _flags(logs)["worker"] == "0" and "tail" in _flags(logs)["command"]
    (stop,) = commands("stop")
    assert _flags(stop)["worker"] == "all" and "pkill" in _flags(stop)["command"]
    (delete,) = commands("delete")
    assert delete[3:6] == ["tpu-vm", "delete", "gj"]
    (delete,) = commands("delete", "--queued")
    assert delete[3:6] == ["queued-resources", "delete", "gj"] and "--force" in delete
    (clone,) = commands("setup", "--repo=git@github.com:me/gen_jax.git", "--ref=v1")
    assert "git clone -q git@github.com:me/gen_jax.git ~/gen_jax" in clone[-1]
    assert "checkout -q v1" in clone[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", *TPU, "--workdir=runs/x"], "must be a gs:// URL"),
        (["create", "--zone=z"], "--name (or TPU_NAME) is required"),
        (["create", *TPU, "--type=v9-8"], "pass --version="),
        (["reboot", *TPU], "unknown command 'reboot'"),
        (["run", *TPU, "--", "train", "--workdir=runs/x"], "need a gs:// --workdir"),
        (["create", *TPU, "--name", "x"], "unknown option --name"),
    ],
)
def test_tpu_vm_bad_input_names_the_fix(args, message):
    result = _launch("tpu_vm.sh", "--dry-run", *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_tpu_vm_run_trains_in_the_foreground_and_stops_on_sigterm():
    """A sweep's TPU trial: the flags after -- as they are (its own gs://
    workdir), every worker, in the foreground; SIGTERM runs `stop`."""
    trial = ["train", "--config=configs/vae_digits.py", "--workdir=gs://bkt/s/trial_3"]
    result = _launch("tpu_vm.sh", "--dry-run", "run", *TPU, "--", *trial)
    assert "# on SIGTERM or SIGINT:" in result.stdout
    stop, train = _commands(result.stdout)
    assert _flags(stop)["worker"] == "all"
    assert "pkill -TERM" in _flags(stop)["command"]
    remote = shlex.split(_flags(train)["command"])
    assert _flags(train)["worker"] == "all" and "nohup" not in remote
    main = remote.index("gen_jax.main")
    assert remote[main + 1 :] == [*trial, "--distributed"]


SWEEP = [
    "--config=configs/fm_digits.py",
    "--space=configs/sweeps/fm_digits.py",
    "--sweep_dir=runs/sweeps/fm",
    "--storage=postgresql+psycopg://u@db/sweeps",
    "--max_trials=32",
]


def test_slurm_sweep_array_task_runs_one_sweep_worker():
    result = _launch(
        "slurm_sweep.sbatch",
        "--dry-run",
        "--",
        *SWEEP,
        env={"SLURM_ARRAY_TASK_ID": "5"},
    )
    assert "# array task 5:" in result.stdout
    (worker,) = _commands(result.stdout)
    assert _env(worker) == {"GEN_JAX_SWEEP_WORKER": "5"}
    main = worker.index("gen_jax.main")
    assert worker[main + 1 :] == ["sweep", *SWEEP]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([a for a in SWEEP if "storage" not in a], "give --storage=postgresql"),
        ([a for a in SWEEP if "max_trials" not in a], "give --max_trials"),
    ],
)
def test_slurm_sweep_bad_input_names_the_fix(args, message):
    env = {"SLURM_ARRAY_TASK_ID": "0"}
    result = _launch(
        "slurm_sweep.sbatch", "--dry-run", "--", *args, env=env, check=False
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_local_sh_passes_sigterm_to_every_process_and_waits(tmp_path):
    """A sweep prunes a 2-process trial by SIGTERM to local.sh: both processes
    get it (each would save and exit 0) and local.sh exits 0 once they have."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'trap \'echo "stopped $*" >> "$FAKE_LOG"; exit 0\' TERM\n'
        'echo "started" >> "$FAKE_LOG"\n'
        "while true; do sleep 0.05; done\n"
    )
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log),
           "LOG_DIR": str(tmp_path / "logs")}  # fmt: skip
    proc = subprocess.Popen(
        ["bash", os.path.join(helpers.ROOT, "launch", "local.sh"), "2", "1", "--",
         "train", "--workdir=w"],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (not log.exists() or log.read_text().count("started") < 2) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    stopped = [
        line for line in log.read_text().splitlines() if line.startswith("stopped")
    ]
    assert sorted(line.split()[-1] for line in stopped) == [
        "--process_id=0",
        "--process_id=1",
    ]
