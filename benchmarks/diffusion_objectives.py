"""DDPM, EDM and flow matching on the embedded 8x8 digits, UNet and DiT, at
equal training steps: sample quality at a few model-call budgets, and steps/s.

  python -m benchmarks.diffusion_objectives --workdir=runs/objectives \
    [--runs=ddpm-unet,edm-unet,flow-dit] [--num_steps=2000] [--num_samples=1000]

Each run trains through `gen-jax train` from ddpm_digits (the UNet runs) or
fm_digits (the DiT runs), with only `diffusion.objective` changed (data,
optimizer, steps and EMA are the same; ddpm-unet is ddpm_digits, edm-unet is
edm_digits, flow-dit is fm_digits), then `gen-jax evaluate` scores 1000
samples (Fréchet digits distance and recall against the train split) for each
sampler setting below.
Prints a markdown table and appends one JSON line per run to --out.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BACKBONES = {"unet": "configs/ddpm_digits.py", "dit": "configs/fm_digits.py"}
# (label, model calls, sampler, steps) per objective.
CONTINUOUS = [
    ("Euler", 10, "euler", 10),
    ("DPM-Solver++(2M)", 10, "dpm_solver_pp_2m", 10),
    ("Heun", 11, "heun", 6),
    ("Heun", 35, "heun", 18),
]
SAMPLERS = {
    "ddpm": [
        ("DDIM", 10, "ddim", 10),
        ("DPM-Solver++(2M)", 10, "dpm_solver_pp_2m", 10),
        ("DDIM", 35, "ddim", 35),
        ("DDIM", 50, "ddim", 50),
    ],
    "edm": CONTINUOUS,
    "flow": CONTINUOUS,
}


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def _steps_per_sec(workdir: str) -> float | None:
    rates = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "steps_per_sec" in r:
                rates.append(r["steps_per_sec"])
    # The first interval holds the compile.
    return sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else None


def measure(run: str, workdir: str, num_steps: int, num_samples: int) -> dict:
    objective, backbone = run.split("-")
    config = BACKBONES[backbone]
    overrides = [
        f"--config.diffusion.objective={objective}",
        f"--config.diffusion.sampler={'ddim' if objective == 'ddpm' else 'heun'}",
    ]
    gen_jax = [sys.executable, "-m", "gen_jax.main"]
    if not os.path.exists(os.path.join(workdir, "checkpoints")):
        _run(
            gen_jax
            + ["train", f"--config={config}", f"--workdir={workdir}"]
            + overrides
            + [f"--config.train.num_steps={num_steps}"]
        )
    row = {"run": run, "num_steps": num_steps, "steps_per_sec": _steps_per_sec(workdir)}
    row["quality"] = []
    for label, calls, sampler, steps in SAMPLERS[objective]:
        name = f"quality_{sampler}_{steps}"
        _run(
            gen_jax
            + [
                "evaluate",
                f"--workdir={workdir}",
                f"--sampler={sampler}",
                f"--sampler_steps={steps}",
                f"--num_samples={num_samples}",
                f"--name={name}",
            ]
        )
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            last = [json.loads(line) for line in f][-1]
        found = {
            k.split("/")[-1]: v
            for k, v in last.items()
            if k.startswith(f"eval/{name}/")
        }
        row["quality"].append({"sampler": label, "model_calls": calls, **found})
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/objectives")
    parser.add_argument(
        "--runs", default="ddpm-unet,edm-unet,flow-unet,ddpm-dit,edm-dit,flow-dit"
    )
    parser.add_argument("--num_steps", type=int, default=2000)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/diffusion_objectives.jsonl")
    args = parser.parse_args(argv)
    print("| objective, backbone | steps/s | sampler | model calls | FD | recall |")
    print("|---|---|---|---|---|---|")
    for run in args.runs.split(","):
        row = measure(
            run, os.path.join(args.workdir, run), args.num_steps, args.num_samples
        )
        for q in row["quality"]:
            print(
                f"| {run} | {row['steps_per_sec'] or 0:.1f} | {q['sampler']} | "
                f"{q['model_calls']} | {q['frechet_distance']:.2f} | "
                f"{q['recall']:.2f} |",
                flush=True,
            )
        with open(os.path.join(ROOT, args.out), "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
