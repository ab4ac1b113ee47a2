"""Trials per hour of `gen-jax sweep`: one worker against two, on SQLite and on
PostgreSQL (a local server this benchmark starts, as the tests do).

Each cell runs --trials short trials of --config (every trial `gen-jax train`
in its own process, after one warm-up sweep fills the compilation cache) to
the study's --max_trials, as one `gen-jax sweep --workers=K` process; trials
per hour = trials / wall time of that sweep.

  python -m benchmarks.sweep_throughput [--trials=6] [--out=benchmarks/sweep_throughput.jsonl]

Prints a markdown table and appends one JSON line per cell to --out.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests import helpers  # the PostgreSQL server the tests start

CONFIG = ["--config=configs/vae_digits.py:smoke", "--config.train.num_steps=8"]
SPACE = """
import ml_collections

def get_space():
    return ml_collections.ConfigDict({
        "metric": "eval/heldout/model/loss",
        "direction": "minimize",
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
    })

def suggest(trial):
    return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 3e-3, log=True)}
"""


def _sweep(tmp: str, name: str, storage: str | None, workers: int, trials: int):
    sweep_dir = os.path.join(tmp, name)
    cmd = [sys.executable, "-m", "gen_jax.main", "sweep", *CONFIG]
    cmd += [f"--space={tmp}/space.py", f"--sweep_dir={sweep_dir}"]
    cmd += [f"--max_trials={trials}", f"--workers={workers}"]
    cmd += [f"--storage={storage}", f"--study={name}"] if storage else []
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", default="benchmarks/sweep_throughput.jsonl")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, helpers.postgres_server() as pg:
        with open(os.path.join(tmp, "space.py"), "w") as f:
            f.write(textwrap.dedent(SPACE))
        _sweep(tmp, "warmup", None, 1, 1)  # fills the compilation cache
        for storage_name, storage in (("SQLite", None), ("PostgreSQL", pg)):
            for workers in (1, 2):
                name = f"{storage_name.lower()}_{workers}"
                wall = _sweep(tmp, name, storage, workers, args.trials)
                rows.append(
                    {
                        "storage": storage_name,
                        "workers": workers,
                        "trials": args.trials,
                        "wall_s": wall,
                        "trials_per_hour": args.trials * 3600 / wall,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| storage | workers | trials | wall s | trials / hour |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['storage']} | {r['workers']} | {r['trials']} | {r['wall_s']:.0f} "
            f"| {r['trials_per_hour']:.0f} |"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
        text=True, check=False,
    ).stdout.strip()  # fmt: skip
    meta = {"config": " ".join(CONFIG), "commit": commit, "cpus": os.cpu_count()}
    with open(os.path.join(ROOT, args.out), "a") as f:
        for r in rows:
            f.write(json.dumps(r | meta) + "\n")


if __name__ == "__main__":
    main()
