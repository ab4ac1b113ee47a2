"""XLA:CPU's dot backends A/B on the four reference shapes, in one run.

  python -m benchmarks.dot_backends [--families=lm,gan,vae,diffusion] [--rounds=2]

Backends, as XLA_FLAGS (jaxlib 0.10.2):
- `ynnpack`: the default; dots (and reductions) run in YNNPACK fusions
  (`__ynn_fusion` in the optimised HLO).
- `eigen`: `--xla_cpu_experimental_ynn_fusion_type=-individual_dot`, dots
  back on XLA's own runtime (Eigen).
- `onednn`: `--xla_cpu_use_onednn=true
  --xla_cpu_experimental_onednn_fusion_type=dot`, dots in oneDNN. Freeing
  its compiled executable aborts the process (`object_pool.h:117`) after the
  row is written: benchmark-only, never a default.

And for `--dtypes` with bfloat16, each backend twice: precision.py's native
bf16 x bf16 -> f32 dots and its emulation (rounded operands, f32 dots),
forced through $GEN_JAX_NARROW_DOTS. Each cell runs `gen-jax bench` in its
own process; rounds alternate the cells; a cell's figure is the median over
rounds of each run's median step time. Appends one JSON line per cell (with
the gen_jax record's provenance) to --out.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from benchmarks.compare import PROVENANCE, ROOT, _last_record
from benchmarks.reference import REFERENCE

BACKENDS = {
    "ynnpack": "",
    "eigen": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
}


def _cells(families, dtypes, backends):
    for family in families:
        for dtype in dtypes:
            for backend in backends:
                modes = ["native", "emulated"] if dtype != "float32" else [""]
                for mode in modes:
                    yield family, dtype, backend, mode


def _bench(family, dtype, backend, mode, steps, warmup, out) -> dict:
    config, overrides = REFERENCE[family]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {BACKENDS[backend]}".strip()
    if mode:
        env["GEN_JAX_NARROW_DOTS"] = mode
    cmd = [sys.executable, "-m", "gen_jax.main", "bench", f"--config={config}"]
    cmd += overrides + [f"--config.model.dtype={dtype}", "--data_batches=2"]
    cmd += [f"--timed_steps={steps}", f"--warmup_steps={warmup}", f"--out={out}"]
    # oneDNN's abort at exit makes the exit status nonzero: the row counts
    # when it was written.
    before = os.path.getsize(out) if os.path.exists(out) else 0
    try:
        return _last_record(cmd, out, env)
    except RuntimeError:
        if backend == "onednn" and os.path.getsize(out) > before:
            with open(out) as f:
                return json.loads(f.readlines()[-1])
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(REFERENCE))
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default="benchmarks/dot_backends.jsonl")
    args = parser.parse_args()
    cells = list(
        _cells(
            args.families.split(","), args.dtypes.split(","), args.backends.split(",")
        )
    )
    times = {c: [] for c in cells}
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.jsonl")
        for _ in range(args.rounds):
            for cell in cells:
                try:
                    r = _bench(*cell, args.steps, args.warmup, out)
                except RuntimeError as e:  # a backend that fails is a result too
                    print(f"{cell}: failed: {str(e)[-300:]}", file=sys.stderr)
                    continue
                times[cell].append(1e3 * r["step_s_median"])
                records[cell] = r
    print("| family | dtype | backend | bf16 dots | ms/step | vs ynnpack |")
    print("|---|---|---|---|---|---|")
    with open(os.path.join(ROOT, args.out), "a") as f:
        for cell in cells:
            family, dtype, backend, mode = cell
            if not times[cell]:
                print(f"| {family} | {dtype} | {backend} | {mode or '-'} | failed | |")
                continue
            ms = float(np.median(times[cell]))
            base = times.get((family, dtype, "ynnpack", mode))
            ratio = f"{np.median(base) / ms:.2f}" if base else "-"
            print(
                f"| {family} | {dtype} | {backend} | {mode or '-'} | {ms:.1f} | {ratio} |"
            )
            row = {"label": args.label, "family": family, "dtype": dtype}
            row |= {"backend_flags": BACKENDS[backend], "dot_backend": backend}
            row |= {"narrow_dots": mode or None, "ms": ms, "rounds": times[cell]}
            f.write(json.dumps(row | {k: records[cell][k] for k in PROVENANCE}) + "\n")


if __name__ == "__main__":
    main()
