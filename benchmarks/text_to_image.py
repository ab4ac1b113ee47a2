"""Text-to-image on the captioned 8x8 digits: does the language model steer the
images? Prompt adherence on held-out captions for three runs, each at its
config's training steps (t2i_digits 6000, fm_digits 2000), each sampled with 10
model calls (DPM-Solver++(2M), 10 steps):

  (a) t2i_digits with the pydoc LM (lm_pydoc, trained here) as its encoder;
  (b) t2i_digits with a randomly initialised LM of the same shape (lm_pydoc's
      config, one step at learning rate 0: its EMA is its init);
  (c) fm_digits, the class-conditional flow DiT: the digit accuracy of its
      samples of each class (`class_accuracy`), and its Fréchet distance.

  python -m benchmarks.text_to_image --workdir=runs/t2i [--guidance=1,2,3]
    [--num_samples=1000] [--out=benchmarks/text_to_image.jsonl]

Runs already trained in --workdir are reused (train.py resumes a finished run
as a no-op). `gen-jax evaluate --type=prompts` scores each text run per
guidance weight (digit, attribute and per-attribute accuracy, Fréchet digits
distance against the train split, on heldout_phrasings and heldout_combos);
`gen-jax evaluate` scores fm_digits. Steps/s are the training logs' medians
(first interval, the compile, dropped). Prints a markdown table and appends one
JSON line per row to --out.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 10 model calls: flow's best 10-call sampler on the DiT (README's objectives table).
SAMPLER = ["--sampler=dpm_solver_pp_2m", "--sampler_steps=10"]
SPLITS = ("test", "heldout_phrasings", "heldout_combos")
# Captions of train images too: the Fréchet distance's reference is the train
# split, and a sample set compares with it like for like only when its captions
# follow that split's digits and attributes, as fm_digits' cycled labels follow
# its classes. Samples from the 300 test images' captions inherit the test
# split's own distance to train (the real test images score ~7: the `floor` row).
FD_SPLIT = "train"


def _jax_version() -> str:
    out = _run([sys.executable, "-c", "import jax; print(jax.__version__)"])
    return out.strip().splitlines()[-1]


def _run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def _train(workdir: str, config: str, *overrides: str) -> None:
    _run(["gen-jax", "train", f"--config={config}", f"--workdir={workdir}", *overrides])


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _steps_per_sec(workdir: str) -> float | None:
    rates = [r["steps_per_sec"] for r in _rows(workdir) if "steps_per_sec" in r]
    rates = sorted(rates[1:])
    return rates[len(rates) // 2] if rates else None


def _last_eval(workdir: str, name: str) -> dict:
    prefix = f"eval/{name}/"
    rows = [r for r in _rows(workdir) if any(k.startswith(prefix) for k in r)]
    return {k[len(prefix) :]: v for k, v in rows[-1].items() if k.startswith(prefix)}


def _prompts(workdir: str, guidance: float, num_samples: int) -> dict:
    name = f"bench_g{guidance:g}"
    _run(
        ["gen-jax", "evaluate", f"--workdir={workdir}", "--type=prompts"]
        + SAMPLER
        + [f"--guidance={guidance}", f"--num_samples={num_samples}", f"--name={name}"]
        + ["--splits=" + ",".join((FD_SPLIT, *SPLITS))]
    )
    return _last_eval(workdir, name)


def _floor(workdir: str) -> dict:
    """The real test images scored against the train split: the distance that
    samples from the test split's captions inherit."""
    _run(
        ["gen-jax", "evaluate", f"--workdir={workdir}", "--compare_split=test"]
        + ["--num_samples=300", "--name=floor"]
    )
    return _last_eval(workdir, "floor")


def _baseline(workdir: str, guidance: float, num_samples: int) -> dict:
    name = f"bench_g{guidance:g}"
    _run(
        ["gen-jax", "evaluate", f"--workdir={workdir}"]
        + SAMPLER
        + [f"--guidance={guidance}", f"--num_samples={num_samples}", f"--name={name}"]
    )
    return _last_eval(workdir, name)


def _markdown(row: dict) -> str:
    """The README's table row of one result."""
    if "guidance" not in row:  # the floor: real images, no model
        cells = ["-", "-", "-", "-", f"{row['frechet_distance']:.2f}", "-"]
        return f"| {row['run']} | - | {' | '.join(cells)} | - |"
    rate = f"{row['steps_per_sec']:.2f}"
    if "class_accuracy" in row:  # the class-conditional baseline
        cells = [f"{row['class_accuracy']:.3f} / -", "-", "-"]
        cells += [f"{row['frechet_distance']:.2f}", "-", "-"]
    else:
        cells = [
            f"{row[s + '/digit_accuracy']:.3f} / {row[s + '/attribute_accuracy']:.3f}"
            for s in SPLITS
        ]
        cells += [
            f"{row[FD_SPLIT + '/frechet_distance']:.2f}",
            f"{row['test/frechet_distance']:.2f}",
            f"{row['heldout_phrasings/frechet_distance']:.2f}",
        ]
    return f"| {row['run']} | {row['guidance']:g} | {' | '.join(cells)} | {rate} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/t2i")
    parser.add_argument("--guidance", default="1,2,3")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/text_to_image.jsonl")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    lm, lm_random = f"{work}/lm_pydoc", f"{work}/lm_random"
    _train(lm, "configs/lm_pydoc.py")
    _train(
        lm_random,
        "configs/lm_pydoc.py",
        "--config.train.num_steps=1",
        "--config.optim.model.lr=0",
        "--config.optim.model.warmup_steps=0",
    )
    runs = {"pydoc LM": f"{work}/t2i_pydoc", "random LM": f"{work}/t2i_random"}
    for (_, workdir), encoder in zip(runs.items(), (lm, lm_random)):
        _train(workdir, "configs/t2i_digits.py", f"--config.text.encoder={encoder}")
    baseline = f"{work}/fm_digits"
    _train(baseline, "configs/fm_digits.py")
    commit = _run(["git", "rev-parse", "--short", "HEAD"]).strip()
    base_rate = _steps_per_sec(baseline)
    table = []
    for g in [float(x) for x in args.guidance.split(",")]:
        for encoder, workdir in runs.items():
            scores = _prompts(workdir, g, args.num_samples)
            table.append(
                {"run": f"t2i_digits, {encoder}", "guidance": g, **scores}
                | {"steps_per_sec": _steps_per_sec(workdir)}
            )
        scores = _baseline(baseline, g, args.num_samples)
        table.append(
            {"run": "fm_digits (class labels)", "guidance": g, **scores}
            | {"steps_per_sec": base_rate}
        )
    table.append({"run": "real test images (no model)", **_floor(baseline)})
    print(
        "| run | guidance | test: digit / attribute acc. | held-out phrasings: "
        "digit / attribute | held-out combos: digit / attribute | FD (train "
        "captions; labels) | FD (test captions) | FD (phrasings) | training "
        "steps/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in table:
        print(_markdown(row))
    meta = {"commit": commit, "sampler": "dpm++2m/10", "jax": _jax_version()}
    with open(os.path.join(ROOT, args.out), "a") as f:
        for row in table:
            # The configs' model.dtype: the benchmark overrides none.
            f.write(json.dumps(row | meta | {"dtype": "float32"}) + "\n")


if __name__ == "__main__":
    main()
