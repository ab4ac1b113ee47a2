"""Every family at its published shape on one accelerator, in one JSON file:
train step time, MFU and peak memory (`gen_jax.bench`, the real train step),
and the samplers' rates (images/s; the LM's decode tokens/s).

  python -m benchmarks.accelerator --out=accelerator.json          # H100 / H200
  python -m benchmarks.accelerator --tiny --out=/tmp/tiny.json     # CPU: smoke shapes

Shapes: `ddpm_cifar10` (35.7M UNet, batch 128), `gan_cifar10` (SNGAN, batch
64), both bf16 compute on synthetic data of CIFAR-10's shape (no download), and
the LM at GPT-2 small (12 layers, width 768, 12 heads, GELU MLP 3072, LayerNorm,
vocab 50257, 1024-token rows, batch 32, bf16). Planned for at most 8 minutes on
one H100 / H200 (compiles included); `--tiny` runs the `:smoke` variants and a
2-layer LM so the whole path can be checked on a CPU.

Then the XLA GPU flags JAX's GPU performance tips recommend, A/B on the LM's
train step (`--flags_ab`, on by default; each variant, the baseline included,
in its own process since XLA_FLAGS is read when the backend starts):
`--xla_gpu_enable_latency_hiding_scheduler=true` and
`--xla_gpu_triton_gemm_any=true`, written under "flags_ab".
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax


def lm_gpt2_small(tiny: bool):
    from configs import lm_pydoc

    c = lm_pydoc.get_config("smoke" if tiny else None)
    if not tiny:
        c.model.update(
            num_layers=12,
            num_heads=12,
            embed_dim=768,
            mlp_dim=3072,
            mlp="gelu",
            norm="layer",
            norm_eps=1e-5,
            vocab_size=50257,
            dtype="bfloat16",
        )
        c.data.update(name="synthetic", seq_len=1025)
        c.train.batch_size = 32
    c.evals = {}
    return c


def image_config(name: str, tiny: bool):
    import importlib

    c = importlib.import_module(f"configs.{name}").get_config("smoke" if tiny else None)
    c.data.name = "synthetic"  # CIFAR-10's shapes, no download
    c.evals = {}
    return c


FLAGS_AB = {
    "baseline": "",
    "latency_hiding_scheduler": "--xla_gpu_enable_latency_hiding_scheduler=true",
    "triton_gemm_any": "--xla_gpu_triton_gemm_any=true",
}


def flags_ab(tiny: bool, steps: int) -> dict:
    """The LM train step's median ms under each FLAGS_AB variant."""
    out = {}
    for name, flags in FLAGS_AB.items():
        env = {**os.environ}
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "lm.json")
            cmd = [sys.executable, "-m", "benchmarks.accelerator", f"--out={path}"]
            cmd += ["--only=lm_gpt2_small", "--no_flags_ab", f"--steps={steps}"]
            cmd += ["--tiny"] if tiny else []
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            with open(path) as f:
                (record,) = json.load(f)["records"]
        out[name] = {"xla_flags": env["XLA_FLAGS"], "ms": record["step_s_median"] * 1e3}
        out[name]["mfu"] = record.get("mfu")
        print(f"flags {name}: {out[name]['ms']:.1f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="smoke shapes (a CPU)")
    parser.add_argument(
        "--steps", type=int, default=0, help="timed steps (default 20; tiny 3)"
    )
    parser.add_argument("--only", default="", help="one run's name, train mode")
    parser.add_argument("--no_flags_ab", action="store_true")
    args = parser.parse_args()
    from gen_jax import bench

    steps = args.steps or (3 if args.tiny else 20)
    warmup = 1 if args.tiny else 3
    runs = [
        ("ddpm_cifar10", image_config("ddpm_cifar10", args.tiny), 16),
        ("gan_cifar10", image_config("gan_cifar10", args.tiny), 64),
        ("lm_gpt2_small", lm_gpt2_small(args.tiny), 8),
    ]
    start = time.perf_counter()
    records = []
    if args.only:
        runs = [r for r in runs if r[0] == args.only]
    for name, config, samples in runs:
        for mode in ("train",) if args.only else ("train", "sample"):
            if name == "ddpm_cifar10" and mode == "sample":  # DDIM, 50 steps
                steps_ddim = min(50, config.diffusion.num_timesteps)
                config.diffusion.update(sampler="ddim", sample_steps=steps_ddim)
            (record,) = bench.run(
                config,
                label=name,
                steps=steps if mode == "train" else 2,
                warmup=warmup if mode == "train" else 1,
                mode=mode,
                num_samples=samples if not args.tiny else 2,
            )
            records.append(record)
            print(
                f"{name} {mode}: {record['step_s_median'] * 1e3:.1f} ms, "
                f"mfu {record.get('mfu') or 0:.3f}, "
                f"tokens/s {record.get('tokens_per_s') or 0:.0f}",
                flush=True,
            )
    summary = {
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "tiny": args.tiny,
        "seconds": round(time.perf_counter() - start, 1),
        "records": records,
    }
    if not (args.only or args.no_flags_ab):
        summary["flags_ab"] = flags_ab(args.tiny, steps)
        summary["seconds"] = round(time.perf_counter() - start, 1)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"wrote {args.out} ({summary['seconds']} s)")


if __name__ == "__main__":
    main()
