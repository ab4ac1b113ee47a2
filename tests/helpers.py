"""Small shared pieces for tests: run subprocesses of the CLI, read metrics."""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# LLVM at -O0 instead of XLA:CPU's default -O2: compiles dominate this suite,
# and the tiny test programs compile several times faster unoptimised. Both
# sides of every comparison in the suite compile with the same flags.
_XLA_OPT = "--xla_backend_optimization_level=0"
CACHE_DIR = os.path.join(ROOT, ".pytest_cache", "jax")  # persistent compile cache


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process: -O1 and `devices` simulated CPU devices."""
    return f"{_XLA_OPT} --xla_force_host_platform_device_count={devices}"


def cli_env(devices: int = 4) -> dict[str, str]:
    """The environment for CLI subprocesses: simulated devices, shared compile cache."""
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": xla_flags(devices),
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def cli(
    *args: str, devices: int = 4, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Runs `python -m gen_jax.main ARGS` from the repository root."""
    return run_module("gen_jax.main", *args, devices=devices, timeout=timeout)


def gen_jax(
    *args: str, devices: int = 4, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs the `gen-jax` console script (as installed by pip) from the repository
    root; `env` adds to the environment."""
    script = shutil.which("gen-jax")
    assert script, "the gen-jax console script is missing: pip install -e ."
    return _run([script, *args], devices, timeout, env)


def start_cli(*args: str, devices: int = 4) -> subprocess.Popen:
    """Starts `python -m gen_jax.main ARGS` in the background; stderr is piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "gen_jax.main", *args],
        cwd=ROOT,
        env=cli_env(devices),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def overfit_losses(config, family, params, batch, steps: int) -> list[float]:
    """The losses of `steps` shared train steps on one fixed batch."""
    losses = []
    overfit_state(config, family, params, batch, steps, losses)
    return losses


def overfit_state(config, family, params, batch, steps: int, losses=None):
    """The train state after `steps` shared train steps on one fixed batch
    (each step's loss appended to `losses` when given)."""

    import flax.linen as nn
    import jax

    from gen_jax import optim, step
    from gen_jax.train_state import TrainState

    state = TrainState.create(nn.unbox(params), optim.make(config, ["model"]))
    fn = jax.jit(
        lambda s, b, k: step.train_step(s, b, k, {"ema_decay": 0.9}, family=family)
    )
    for _ in range(steps):
        state, metrics = fn(state, batch, jax.random.key(3))
        if losses is not None:
            losses.append(float(metrics["model/loss"]))
    return state


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_losses(workdir: str) -> dict[int, float]:
    return {
        r["step"]: r["model/loss"] for r in read_metrics(workdir) if "model/loss" in r
    }


def run_module(
    module: str, *args: str, devices: int = 4, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Runs `python -m MODULE ARGS` from the repository root."""
    return _run([sys.executable, "-m", module, *args], devices, timeout)


def _run(
    argv: list[str], devices: int, timeout: int, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=cli_env(devices) | (env or {}),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`gen-jax serve ARGS` on a free port, once /health answers 200 (every
    program compiled): (the process, its base URL)."""
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    script = shutil.which("gen-jax")
    proc = subprocess.Popen(
        [script, "serve", f"--port={port}", *args],
        cwd=ROOT,
        env=cli_env(1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the server exited {proc.returncode}: {proc.stderr.read()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"the server did not become healthy in {timeout} s")


def perturbed(params, scale: float = 0.1, seed: int = 9):
    """`params` plus `scale` x N(0, 1) noise, drawn on the host: numpy, so no
    per-leaf random-number program compiles (seconds for a small DiT's)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (
            np.asarray(x) + scale * rng.standard_normal(np.shape(x)).astype(np.float32)
        ),
        params,
    )


def assert_resumes_exactly(workdir: str, config, tmp_path, last_step: int = 6) -> None:
    """A copy of the finished run `workdir` without its last checkpoint
    (`last_step`), trained again from the one before, ends bitwise where
    the run ended (its raw params)."""
    import jax
    import numpy as np

    from gen_jax import checkpoint, train

    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(last_step)))
    config = config.copy_and_resolve_references()
    config.evals = {}
    final = train.run(config, resumed)
    want = checkpoint.open_run(workdir, ema=False).params
    for x, y in zip(jax.tree.leaves(final.params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@contextlib.contextmanager
def postgres_server(database: str = "sweeps"):
    """A PostgreSQL server on a free port, its data in a directory of its own
    (run as the `postgres` user when we are root: the server refuses root,
    and pytest's own temporary directories are closed to other users); yields
    the database's SQLAlchemy URL, stops the server and removes its files."""
    import tempfile

    root = pathlib.Path(tempfile.mkdtemp(prefix="gen_jax_pg_"))
    data, port = root / "data", free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True)

    run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
    options = f"-p {port} -k {root} -h 127.0.0.1"
    run(
        "pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"
    )
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
