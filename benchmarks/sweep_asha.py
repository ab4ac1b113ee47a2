"""ASHA against the same grid run in full: does pruning find the grid's best
for a fraction of its training steps?

The grid (every combination of --grid's values, in one shuffled order) is
enqueued into two studies,
then `gen-jax sweep` runs each to --max_trials = the grid's size: once with
the space's pruner (ASHA in the shipped spaces), once with pruner none (the
grid in full; the same space otherwise). For each: total training steps (the
last step each trial's metrics.jsonl logged, pruned ones included), wall time
and the best completed value. The run-to-run noise of the metric is the spread
of the grid's best setting retrained under --noise_seeds other seeds.

  python -m benchmarks.sweep_asha --config=configs/vae_digits.py \
    --space=configs/sweeps/vae_digits.py \
    --grid='{"lr": [3e-4, 1e-3, 3e-3, 1e-2], "ema_decay": [0.99, 0.999]}'

A long comparison splits in two: --grid_only runs the grid in full and its
noise and writes that row; a later --reuse_grid runs the pruned sweep alone
against the last grid row of the same config, size and overrides. --pruner
replaces the space's pruner (e.g. a first rung past an early crossing of the
learning curves) without writing a space file.

Prints a markdown table and appends one JSON line per sweep to --out.
"""

import argparse
import itertools
import json
import os
import random
import subprocess
import sys

import optuna

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE_TEMPLATE = """
import importlib.util
spec = importlib.util.spec_from_file_location("_base_space", {path!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)
suggest = base.suggest

def get_space():
    c = base.get_space()
    c.pruner = {pruner!r}
    return c
"""


def _sweep(
    config: str, space: str, sweep_dir: str, n: int, workers: int, extra: list
) -> None:
    cmd = [sys.executable, "-m", "gen_jax.main", "sweep", f"--config={config}"]
    cmd += [f"--space={space}", f"--sweep_dir={sweep_dir}", f"--max_trials={n}"]
    cmd += [f"--workers={workers}"]
    subprocess.run(cmd + extra, cwd=ROOT, check=True)


def _last_step(workdir: str) -> int:
    """The last step a trial trained: its newest checkpoint (a pruned run saves
    where SIGTERM found it, past its last log row) or its last logged step;
    0 for a trial that failed before its first step."""
    metrics = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(metrics):
        return 0
    with open(metrics) as f:
        logged = max(json.loads(line)["step"] for line in f if line.strip())
    ckpts = os.path.join(workdir, "checkpoints")
    saved = (
        [int(d) for d in os.listdir(ckpts) if d.isdigit()]
        if os.path.isdir(ckpts)
        else []
    )
    return max([logged, *saved])


def _train(runs: list[tuple[str, list[str]]], config: str, workers: int) -> None:
    """Trains each (workdir, overrides), `workers` at a time."""
    cmd = [sys.executable, "-m", "gen_jax.main", "train", f"--config={config}"]
    for i in range(0, len(runs), workers):
        procs = [
            subprocess.Popen(cmd + [f"--workdir={w}", *o], cwd=ROOT)
            for w, o in runs[i : i + workers]
        ]
        if any(p.wait() for p in procs):
            sys.exit("a noise-seed run failed (see its output above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--space", required=True)
    parser.add_argument(
        "--grid",
        required=True,
        help="JSON {param: [values]} (their product) or [{param: value}, ...]; "
        "@FILE reads it from FILE (e.g. @benchmarks/fm_digits_grid.json)",
    )
    parser.add_argument("--work", default="runs/sweep_asha")
    parser.add_argument("--noise_seeds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the grid's order")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="trials at once in each sweep (gen-jax sweep --workers): ASHA "
        "stays asynchronous, so more workers can promote a little more",
    )
    parser.add_argument("--out", default="benchmarks/sweep_asha.jsonl")
    parser.add_argument(
        "--full_extra",
        default="",
        help="space-separated overrides for the grid-in-full sweep alone, e.g. "
        "evaluating once at the last step: without a pruner only the final "
        "value counts, and the evaluator's key is its own (training is the same)",
    )
    parser.add_argument(
        "--pruner",
        default="",
        help='JSON pruner spec in place of the space\'s, e.g. \'{"name": "asha", '
        '"reduction_factor": 3, "min_resource": 600}\' (rungs from step 600)',
    )
    parser.add_argument(
        "--grid_only",
        action="store_true",
        help="run the grid in full and its noise alone and write its row, for a "
        "later --reuse_grid run (a long grid can take one session, ASHA the next)",
    )
    parser.add_argument(
        "--reuse_grid",
        action="store_true",
        help="run ASHA alone; the grid in full and its noise from --out's last "
        "grid row of this config and grid size (its commit kept in the row): "
        "trials are deterministic, so a rerun of the grid repeats it",
    )
    args, extra = parser.parse_known_args()  # extra: --config.a.b=v for every run
    if args.grid.startswith("@"):
        with open(args.grid[1:]) as f:
            args.grid = f.read()
    grid = json.loads(args.grid)
    if isinstance(grid, dict):
        points = [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
    else:  # a conditional space's points, each complete
        points = grid
    # One shuffled order, the same in both studies: a grid in sorted order
    # (each trial better than the last) would make ASHA promote every one.
    random.Random(args.seed).shuffle(points)
    name = os.path.splitext(os.path.basename(args.config))[0]
    work = os.path.abspath(os.path.join(args.work, name))
    os.makedirs(work, exist_ok=True)
    if args.grid_only and args.reuse_grid:
        parser.error("--grid_only and --reuse_grid run opposite halves: pick one")
    full_space = _space_file(work, "grid", args.space, {"name": "none"})
    pruned_space = args.space
    if args.pruner:
        pruned_space = _space_file(work, "pruned", args.space, json.loads(args.pruner))
    rows = []
    # The pruned sweep is labelled by its pruner (ASHA in the shipped spaces;
    # e.g. hyperband from --pruner or a space of one's own).
    pruner = _load(pruned_space).get_space().pruner.name
    pruned = "ASHA" if pruner == "asha" else pruner
    sweeps = [(pruned, pruned_space), ("grid in full", full_space)]
    if args.reuse_grid:
        sweeps = sweeps[:1]
    elif args.grid_only:
        sweeps = sweeps[1:]
    for label, space in sweeps:
        sweep_dir = os.path.join(work, pruner if label == pruned else "grid")
        os.makedirs(sweep_dir, exist_ok=True)
        storage = f"sqlite:///{sweep_dir}/study.db"
        study = optuna.create_study(
            storage=storage, study_name=os.path.basename(sweep_dir), load_if_exists=True
        )
        if not study.trials:
            for p in points:
                study.enqueue_trial(p)
        more = args.full_extra.split() if label == "grid in full" else []
        _sweep(args.config, space, sweep_dir, len(points), args.workers, extra + more)
        study = optuna.load_study(study_name=study.study_name, storage=storage)
        # From the trials' own times: a rerun over a finished study reports it.
        wall = (
            max(t.datetime_complete for t in study.trials)
            - min(t.datetime_start for t in study.trials)
        ).total_seconds()
        # A trial whose worker died (a session's end) is FAIL and retried in
        # its own workdir: each workdir's steps count once.
        done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        workdirs = {t.user_attrs.get("workdir") for t in study.trials} - {None}
        steps = sum(_last_step(w) for w in workdirs)
        best = study.best_trial
        rows.append(
            {
                "sweep": label,
                "config": args.config,
                "trials": len(done),
                "pruned": sum(t.state.name == "PRUNED" for t in done),
                # with them, wall_s spans the gap between the two runs
                "failed_attempts": len(study.trials) - len(done),
                "total_steps": steps,
                "wall_s": wall,
                "workers": args.workers,
                "best_value": best.value,
                "best_params": best.params,
            }
            | ({"pruner": args.pruner} if args.pruner and label == pruned else {})
        )
    space = _load(args.space)
    if args.reuse_grid:
        rows.append(_grid_row(args.out, args.config, len(points), extra))
    grid_row = rows[-1]
    keys = space.suggest(optuna.trial.FixedTrial(grid_row["best_params"]))
    noise = grid_row.pop("noise", [grid_row["best_value"]])
    flags = [f"--config.{k}={v}" for k, v in keys.items()] + extra
    seeds = range(1, 0 if args.reuse_grid else args.noise_seeds + 1)
    runs = [
        (os.path.join(work, f"noise_seed{s}"), [*flags, f"--config.seed={s}"])
        for s in seeds
    ]
    _train(runs, args.config, args.workers)
    noise += [_final(w, space.get_space().metric) for w, _ in runs]
    spread = max(noise) - min(noise)
    print(
        "| sweep | trials (pruned) | total steps | wall s | best value | best params |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sweep']} | {r['trials']} ({r['pruned']}) | {r['total_steps']} | "
            f"{r['wall_s']:.0f} | {r['best_value']:.5g} | {r['best_params']} |"
        )
    print(
        f"\ngrid best over seeds {[round(v, 5) for v in noise]} (spread {spread:.4g})"
    )
    ratio = None
    if len(rows) == 2:
        ratio = rows[0]["total_steps"] / rows[1]["total_steps"]
        print(
            f"{pruned} / grid steps: {ratio:.2f}; {pruned} best - grid best: "
            f"{rows[0]['best_value'] - rows[1]['best_value']:.4g}"
        )
    import jax

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    meta = {
        "noise": noise,
        "steps_ratio": ratio,
        "overrides": extra,
        "jax": jax.__version__,
        "commit": commit,
    }
    with open(os.path.join(ROOT, args.out), "a") as f:
        for r in rows:
            f.write(json.dumps(r | meta) + "\n")


def _space_file(work: str, name: str, space: str, pruner: dict) -> str:
    """A space file that is `space` with `pruner` in place of its own."""
    path = os.path.join(work, f"{name}_space.py")
    with open(path, "w") as f:
        f.write(SPACE_TEMPLATE.format(path=os.path.abspath(space), pruner=pruner))
    return path


def _grid_row(out: str, config: str, trials: int, overrides: list[str]) -> dict:
    """The last "grid in full" row of `config` with `trials` trials run with the
    same `overrides` (a grid of 1000 steps is no baseline for one of 2000) in
    `out`; rows written before overrides were recorded never match."""
    with open(os.path.join(ROOT, out)) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    want = ("grid in full", config, trials, overrides)
    for r in reversed(rows):
        if (r["sweep"], r["config"], r["trials"], r.get("overrides")) == want:
            keep = ("sweep", "config", "trials", "pruned", "total_steps", "wall_s")
            keep += ("workers", "best_value", "best_params")
            row = {k: r.get(k) for k in keep}  # rows before "workers" lack it
            return row | {"noise": r["noise"], "grid_commit": r["commit"]}
    raise SystemExit(
        f"--reuse_grid: no grid row of {config} ({trials} trials) with the "
        f"overrides {' '.join(overrides) or '(none)'} in {out}: run the grid once"
    )


def _load(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_space", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _final(workdir: str, metric: str) -> float:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        values = [json.loads(line).get(metric) for line in f if line.strip()]
    return [v for v in values if v is not None][-1]


if __name__ == "__main__":
    main()
