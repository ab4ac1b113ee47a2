"""One convolution's forward + backward (input and kernel gradients) at the
reference shapes of the conv families, in XLA as NHWC and NCHW, float32 and
bfloat16, beside PyTorch eager (NCHW, float32) when torch is installed.

  python -m benchmarks.conv_layouts [--repeats=20]

Median milliseconds after a warm-up; prints a markdown table. Both libraries
run in this one process, one after the other, on every core.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

# name: (batch, height, width, in channels, out channels, kernel, stride)
SHAPES = {
    "vae enc 1 (28x28x1 -> 32, k4 s2)": (128, 28, 28, 1, 32, 4, 2),
    "vae enc 2 (14x14x32 -> 64, k4 s2)": (128, 14, 14, 32, 64, 4, 2),
    "dcgan disc 1 (32x32x3 -> 64, k4 s2)": (64, 32, 32, 3, 64, 4, 2),
    "dcgan disc 2 (16x16x64 -> 128, k4 s2)": (64, 16, 16, 64, 128, 4, 2),
    "unet (32x32x64 -> 64, k3 s1)": (32, 32, 32, 64, 64, 3, 1),
    "unet (16x16x128 -> 128, k3 s1)": (32, 16, 16, 128, 128, 3, 1),
}


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def xla_ms(shape, layout: str, dtype, repeats: int) -> float:
    b, h, w, cin, cout, k, s = shape
    dims = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
    x_shape = (b, h, w, cin) if layout == "NHWC" else (b, cin, h, w)
    k_shape = (k, k, cin, cout) if layout == "NHWC" else (cout, cin, k, k)
    x = jax.random.normal(jax.random.key(0), x_shape, dtype)
    kernel = jax.random.normal(jax.random.key(1), k_shape, dtype)

    def loss(x, kernel):
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            (s, s),
            "SAME",
            dimension_numbers=dims,
            preferred_element_type=jnp.float32,
        )
        return jnp.sum(y**2)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return _median_ms(lambda: jax.block_until_ready(step(x, kernel)), repeats)


def torch_ms(shape, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    b, h, w, cin, cout, k, s = shape
    x = torch.randn(b, cin, h, w, requires_grad=True)
    conv = torch.nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2, bias=False)

    def step():
        conv.zero_grad()
        x.grad = None
        (conv(x) ** 2).sum().backward()

    return _median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        "| conv, fwd + bwd (ms) | XLA NHWC f32 | XLA NCHW f32 | XLA NHWC bf16 | torch NCHW f32 |"
    )
    print("|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        cells = [
            xla_ms(shape, "NHWC", jnp.float32, args.repeats),
            xla_ms(shape, "NCHW", jnp.float32, args.repeats),
            xla_ms(shape, "NHWC", jnp.bfloat16, args.repeats),
            torch_ms(shape, args.repeats),
        ]
        text = " | ".join("-" if c is None else f"{c:.2f}" for c in cells)
        print(f"| {name} | {text} |", flush=True)


if __name__ == "__main__":
    main()
