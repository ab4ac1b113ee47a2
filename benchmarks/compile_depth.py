"""Compile time and step time of the LM train step against depth, scanned
(`model.scan_layers`) vs unrolled, through `gen-jax bench` with the persistent
compilation cache off (each compile is real).

  python -m benchmarks.compile_depth [--layers=4,12,24] [--config=configs/lm_pydoc.py]

Prints a markdown table and one JSON line per run.
"""

import argparse
import json
import os
import subprocess
import tempfile


def bench(config: str, layers: int, scanned: bool, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.jsonl")
        subprocess.run(
            [
                "gen-jax",
                "bench",
                f"--config={config}",
                f"--out={out}",
                f"--config.model.num_layers={layers}",
                f"--config.model.scan_layers={scanned}",
                f"--timed_steps={steps}",
                "--warmup_steps=1",
                "--nocompilation_cache",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        with open(out) as f:
            return json.loads(f.readlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/lm_pydoc.py")
    parser.add_argument("--layers", default="4,12,24")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for layers in [int(n) for n in args.layers.split(",")]:
        for scanned in (False, True):
            r = bench(args.config, layers, scanned, args.steps)
            row = {
                "layers": layers,
                "scan_layers": scanned,
                "compile_s": round(r["compile_s"], 2),
                "step_ms": round(r["step_s_median"] * 1e3, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "| layers | unrolled compile s | scanned compile s | unrolled ms/step | scanned ms/step |"
    )
    print("|---|---|---|---|---|")
    for layers in sorted({r["layers"] for r in rows}):
        u, s = (
            next(r for r in rows if r["layers"] == layers and r["scan_layers"] == b)
            for b in (False, True)
        )
        print(
            f"| {layers} | {u['compile_s']} | {s['compile_s']} | {u['step_ms']} | {s['step_ms']} |"
        )


if __name__ == "__main__":
    main()
