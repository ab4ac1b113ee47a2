"""One matmul three ways in XLA:CPU and in torch: what bf16 costs on this CPU;
and one convolution, which XLA:CPU upcasts to float32 whatever it is asked.

  python -m benchmarks.bf16_matmul [--shapes=2048x1024x1024,4096x256x1024]

XLA: float32; bf16 x bf16 -> float32 (`preferred_element_type`, YNNPACK's
bf16 kernel: precision.py's "native" dots); bf16 operands upcast to float32
(its "emulated" dots). torch (when installed): float32 and bf16 x bf16. The
CPU and its bf16 instructions head the output (gen_jax.provenance.cpu);
medians of --reps calls after 3 warm-ups, the variants alternated --rounds
times.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import provenance


def _median_ms(f, *args, reps: int) -> float:
    for _ in range(3):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _variants(m: int, k: int, n: int):
    x = jax.random.normal(jax.random.key(0), (m, k))
    w = jax.random.normal(jax.random.key(1), (k, n))
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    f32 = jnp.float32
    out = {
        "xla f32": (jax.jit(lambda a, b: a @ b), x, w),
        "xla bf16->f32 (native)": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=f32)),
            xb,
            wb,
        ),
        "xla bf16 upcast (emulated)": (
            jax.jit(lambda a, b: a.astype(f32) @ b.astype(f32)),
            xb,
            wb,
        ),
    }
    try:
        import torch
    except ImportError:
        return out
    torch.manual_seed(0)
    a, b = torch.randn(m, k), torch.randn(k, n)
    ab, bb = a.bfloat16(), b.bfloat16()
    # torch is synchronous on CPU: block_until_ready passes its tensor through.
    out["torch f32"] = (lambda: a @ b,)
    out["torch bf16"] = (lambda: ab @ bb,)
    return out


def _conv_variants() -> dict:
    """A 3x3 NHWC convolution, 32x32x32x128 -> 64 channels, batch 32, in
    float32 and as bf16 x bf16 -> float32; the compiled program's converts
    tell whether XLA kept bf16 operands."""
    x = jax.random.normal(jax.random.key(0), (32, 32, 32, 128))
    k = jax.random.normal(jax.random.key(1), (3, 3, 128, 64))
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(pref):
        return jax.jit(
            lambda a, b: jax.lax.conv_general_dilated(
                a,
                b,
                (1, 1),
                "SAME",
                dimension_numbers=dims,
                preferred_element_type=pref,
            )
        )

    bf = jnp.bfloat16
    return {
        "xla conv f32": (conv(None), x, k),
        "xla conv bf16->f32": (conv(jnp.float32), x.astype(bf), k.astype(bf)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2048x1024x1024,4096x256x1024")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(provenance.cpu() | provenance.software()))
    print("| m x k x n | variant | ms | GFLOP/s |")
    print("|---|---|---|---|")
    for shape in args.shapes.split(","):
        m, k, n = map(int, shape.split("x"))
        variants = _variants(m, k, n)
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (f, *xs) in variants.items():
                reps = 2 if name == "torch bf16" else args.reps  # seconds each
                times[name].append(_median_ms(f, *xs, reps=reps))
        for name, ts in times.items():
            ms = float(np.median(ts))
            print(f"| {shape} | {name} | {ms:.1f} | {2 * m * k * n / ms / 1e6:.0f} |")
    for name, (f, *xs) in _conv_variants().items():
        ms = _median_ms(f, *xs, reps=args.reps)
        text = f.lower(*xs).compile().as_text()
        converts = sum(" convert(" in line for line in text.splitlines())
        print(
            f"| conv 3x3 32x32x128->64, batch 32 | {name} | {ms:.1f} | converts: {converts} |"
        )


if __name__ == "__main__":
    main()
