"""Compile seconds per sweep trial, with the optimizer's scalars as constants
(gen_jax before they were held in the optimizer state) and as values (now).

Three trials of a sweep on `--config`, each `gen-jax train` in its own process
and workdir, differing only in the learning rate, b2 and the EMA decay (what a
sweep's space draws), share one fresh persistent compilation cache per source
tree. JAX's own compile log (JAX_LOG_COMPILES) says how long the train step's
XLA compilation took (a cache hit is the time to load it) and whether the cache
held it; the trial's wall time is beside it.

  python -m benchmarks.sweep_compile [--baseline=351f172] [--config=configs/fm_digits.py]
    [--out=benchmarks/sweep_compile.jsonl]

The baseline is checked out with `git worktree` (a temporary directory) and run
with its own package first on PYTHONPATH. Prints a markdown table and appends
one JSON line per trial to --out.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = (  # (lr, b2, ema_decay): what a sweep's draws differ in
    (1e-3, 0.999, 0.999),
    (3e-3, 0.99, 0.99),
    (4e-4, 0.995, 0.9995),
)
# Short trials whose end-of-run evaluations stay small (the final step runs them).
SHORT = (
    "--config.train.num_steps=50",
    "--config.evals.quality.num_samples=100",
    "--config.evals.samples.num_samples=16",
)
COMPILED = re.compile(r"Finished XLA compilation of jit\(train_step\) in ([\d.]+) sec")
HIT = "Persistent compilation cache hit for 'jit_train_step'"


def _trial(tree: str, cache: str, workdir: str, config: str, values) -> dict:
    lr, b2, ema = values
    cmd = [sys.executable, "-m", "gen_jax.main", "train", f"--config={config}"]
    cmd += [f"--workdir={workdir}", f"--compilation_cache_dir={cache}", *SHORT]
    cmd += [f"--config.optim.model.lr={lr}", f"--config.optim.model.b2={b2}"]
    cmd += [f"--config.train.ema_decay={ema}"]
    env = dict(os.environ, PYTHONPATH=tree, JAX_LOG_COMPILES="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    start = time.perf_counter()
    result = subprocess.run(
        cmd, check=False, cwd=tree, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    compiles = [float(x) for x in COMPILED.findall(result.stderr)]
    if not compiles:
        raise RuntimeError(
            "no train_step compilation in the log:\n" + result.stderr[-2000:]
        )
    return {
        "lr": lr,
        "b2": b2,
        "ema_decay": ema,
        "train_step_compile_s": compiles[0],
        "cache_hit": HIT in result.stderr,
        "trial_wall_s": wall,
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="351f172")
    parser.add_argument("--config", default="configs/fm_digits.py")
    parser.add_argument("--out", default="benchmarks/sweep_compile.jsonl")
    args = parser.parse_args()
    commit = _git("rev-parse", "--short", "HEAD")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = os.path.join(tmp, "baseline")
        _git("worktree", "add", "--detach", baseline, args.baseline)
        try:
            trees = {
                f"constants ({args.baseline})": baseline,
                f"values ({commit})": ROOT,
            }
            for name, tree in trees.items():
                cache = os.path.join(tmp, f"cache_{len(rows)}")
                for i, values in enumerate(TRIALS):
                    workdir = os.path.join(tmp, f"run_{len(rows)}")
                    row = _trial(tree, cache, workdir, args.config, values)
                    rows.append({"optimizer scalars": name, "trial": i, **row})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            _git("worktree", "remove", "--force", baseline)
    print(
        "| optimizer scalars | trial | lr / b2 / EMA | train step compile s "
        "| cache hit | trial wall s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['optimizer scalars']} | {r['trial']} | {r['lr']:g} / {r['b2']:g} / "
            f"{r['ema_decay']:g} | {r['train_step_compile_s']:.2f} | "
            f"{'yes' if r['cache_hit'] else 'no'} | {r['trial_wall_s']:.1f} |"
        )
    import jax

    meta = {"config": args.config, "commit": commit, "jax": jax.__version__}
    with open(os.path.join(ROOT, args.out), "a") as f:
        for r in rows:
            f.write(json.dumps(r | meta) + "\n")


if __name__ == "__main__":
    main()
