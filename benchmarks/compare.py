"""gen_jax's train step vs its PyTorch eager peer at the four reference shapes.

  pip install -e ".[bench]"
  python -m benchmarks.compare [--families=lm,gan,vae,diffusion] [--rounds=3]

Each round runs `gen-jax bench` and `benchmarks.torch_peers` once per family,
alternating, each in its own process (so neither's thread pool idles in the
other's timing); a family's figure is the median over rounds of each run's
median step time. `torch_ms / jax_ms` >= 1 means gen_jax is at least as fast.
Beside eager, each round times the peer under `torch.compile` (inductor, its
forward and backward graphs; the optimizer and EMA stay eager) unless
`--no_torch_compile`; its compile time is in the warm-up, not the figure.
`--dtype=bfloat16` runs both in bf16: gen_jax's `model.dtype`, torch's
`autocast` (params and optimizer float32 on both sides).
`--gen_jax_path=DIR` times another checkout's gen_jax (e.g. a baseline commit,
with this checkout's gen_jax/bench.py copied in), running from DIR.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.reference import REFERENCE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a row ran on, from gen_jax's own record of the last round (bench.FIELDS).
PROVENANCE = [
    "backend",
    "num_devices",
    "jax_version",
    "jaxlib_version",
    "xla_flags",
    "commit",
    "cpu",
    "cpu_id",
    "cpu_features",
]
TORCH_PROVENANCE = ("torch_version", "torch_cpu_capability")


def _last_record(cmd: list[str], out: str, env: dict, cwd: str = ROOT) -> dict:
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    with open(out) as f:
        return json.loads(f.readlines()[-1])


def measure(
    family: str,
    rounds: int,
    steps: int,
    warmup: int,
    gen_jax_path: str,
    torch_compile: bool = True,
    dtype: str = "float32",
):
    """({"jax": [ms per round], "torch": [...], "torch_compile": [...]}, the
    last JAX record)."""
    config, overrides = REFERENCE[family]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # `python -m` puts its working directory first on sys.path: run there.
    jax_cwd = os.path.abspath(gen_jax_path) if gen_jax_path else ROOT
    common = [f"--timed_steps={steps}", f"--warmup_steps={warmup}"]
    common += [f"--config.model.dtype={dtype}"]
    peer_common = [f"--steps={steps}", f"--warmup={warmup}", f"--dtype={dtype}"]
    times = {"jax": [], "torch": [], "torch_compile": []}
    record = None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.jsonl")
        for _ in range(rounds):
            record = _last_record(
                [sys.executable, "-m", "gen_jax.main", "bench", f"--config={config}"]
                + overrides
                + common
                + ["--data_batches=2", f"--out={out}"],
                out,
                env,
                jax_cwd,
            )
            times["jax"].append(1e3 * record["step_s_median"])
            peer = [
                sys.executable,
                "-m",
                "benchmarks.torch_peers",
                f"--family={family}",
            ]
            peer += peer_common + [f"--out={out}"]
            for name, extra in [("torch", [])] + (
                [("torch_compile", ["--compile"])] if torch_compile else []
            ):
                record_t = _last_record(peer + extra, out, {**os.environ})
                times[name].append(1e3 * record_t["step_s_median"])
            record |= {k: record_t[k] for k in TORCH_PROVENANCE}
    return times, record


def _warn_without_bf16_hardware(dtype: str) -> None:
    """A bf16 comparison on a CPU without bf16 instructions measures torch's
    reference kernel (185x its float32 on an AVX2 Zen 3): say so up front."""
    from gen_jax import provenance

    features = (provenance.cpu()["cpu_features"] or "").split()
    wanted = provenance.NARROW_DOT_INSTRUCTIONS["bfloat16"]
    if dtype == "bfloat16" and not wanted & set(features):
        print(
            f"note: this CPU ({' '.join(features) or 'features unknown'}) has no "
            "bf16 instructions: torch's bf16 matmuls fall to a reference kernel "
            "and gen_jax emulates bf16 dots in float32 (unless GEN_JAX_NARROW_DOTS); "
            "the ratios below say "
            "nothing about a bf16-capable host.",
            file=sys.stderr,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(REFERENCE))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gen_jax_path", default="")
    parser.add_argument("--label", default="")
    parser.add_argument("--no_torch_compile", action="store_true")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype of both sides: gen_jax's model.dtype, torch autocast",
    )
    parser.add_argument("--out", default="benchmarks/results.jsonl")
    args = parser.parse_args(argv)
    _warn_without_bf16_hardware(args.dtype)
    print(
        "| family | gen_jax ms/step | torch eager ms/step | torch eager / gen_jax "
        "| torch.compile ms/step | torch.compile / gen_jax | MFU |"
    )
    print("|---|---|---|---|---|---|---|")
    for family in args.families.split(","):
        times, record = measure(
            family,
            args.rounds,
            args.steps,
            args.warmup,
            args.gen_jax_path,
            not args.no_torch_compile,
            args.dtype,
        )
        jax_ms, torch_ms = np.median(times["jax"]), np.median(times["torch"])
        compiled_ms = (
            np.median(times["torch_compile"]) if times["torch_compile"] else None
        )
        row = {
            "label": args.label,
            "family": family,
            "dtype": args.dtype,
            "time": record["time"],
            "device_kind": record["device_kind"],
            "jax_ms": jax_ms,
            "torch_ms": torch_ms,
            "ratio": torch_ms / jax_ms,
            "torch_compile_ms": compiled_ms,
            "compile_ratio": compiled_ms / jax_ms if compiled_ms else None,
            "mfu": record["mfu"],
            "rounds": times,
        } | {k: record[k] for k in PROVENANCE + list(TORCH_PROVENANCE)}
        compiled = (
            f"{compiled_ms:.1f} | {row['compile_ratio']:.2f}"
            if compiled_ms
            else "- | -"
        )
        print(
            f"| {family} | {jax_ms:.1f} | {torch_ms:.1f} | {row['ratio']:.2f} | "
            f"{compiled} | {record['mfu'] or 0:.2f} |",
            flush=True,
        )
        with open(os.path.join(ROOT, args.out), "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
