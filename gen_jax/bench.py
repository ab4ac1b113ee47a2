"""Step-throughput benchmark: times a config's real train step (or its sampler);
`gen-jax bench` (gen_jax/tools/bench.py) is its command line.

The step is `build.setup`'s, so its code path and shardings are training's. It
reports compile time, step time (median/p10/p90, each step timed to
`block_until_ready`), examples/s (tokens/s for the LM), FLOPs per step (XLA's
cost analysis; the analytic 6N + attention count for the LM), MFU, the compiled
program's peak memory, and the input pipeline's own rate, as a table and as one
JSON line appended to --out.
"""

import datetime
import json
import math
import time

import jax
import ml_collections
import numpy as np

from gen_jax import build, data, metrics, provenance, sharding

# Every JSON line has these keys (None where a field does not apply).
FIELDS = tuple(
    """
    time mode config family model backend device_kind num_devices mesh batch_size
    num_params frozen_params state_bytes opt_state_bytes ema_bytes steps warmup
    compile_s step_s_median step_s_p10 step_s_p90 examples_per_s tokens_per_s
    flops_per_step_xla flops_per_step_analytic peak_flops peak_flops_source mfu
    mfu_analytic memory_peak_bytes memory_temp_bytes memory_argument_bytes
    data_batches_per_s data_examples_per_s data_warning profile_dir
    jax_version jaxlib_version dtype xla_flags commit cpu cpu_id cpu_features
    """.split()  # noqa: SIM905
)


def _percentiles(times: list[float]) -> dict[str, float]:
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return {"step_s_median": median, "step_s_p10": p10, "step_s_p90": p90}


def _time_calls(fn, args_fn, steps: int, warmup: int, out=None):
    """Wall time of each of `steps` calls after `warmup` calls, each call
    blocked until its outputs are ready, and the last outputs. `args_fn(out)`
    gives the next inputs from the previous outputs (None at first)."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args_fn(out)))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times, out


def _memory(compiled) -> dict[str, int | None]:
    stats = compiled.memory_analysis()
    if stats is None:  # some backends do not report
        return dict.fromkeys(
            ("memory_peak_bytes", "memory_temp_bytes", "memory_argument_bytes")
        )
    peak = getattr(stats, "peak_memory_in_bytes", 0) or (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return {
        "memory_peak_bytes": int(peak),
        "memory_temp_bytes": int(stats.temp_size_in_bytes),
        "memory_argument_bytes": int(stats.argument_size_in_bytes),
    }


def _xla_flops(compiled) -> float | None:
    """FLOPs of the whole (global) program: XLA reports them per partition."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    devices = len(jax.tree.leaves(compiled.input_shardings)[0].device_set)
    return None if flops is None else float(flops) * devices


def _data_rate(it, batch_size: int, batches: int) -> dict:
    """Batches/s of the input pipeline alone (`it` has given its first batch)."""
    start = time.perf_counter()
    for _ in range(batches):
        jax.block_until_ready(next(it))
    rate = batches / (time.perf_counter() - start)
    return {"data_batches_per_s": rate, "data_examples_per_s": rate * batch_size}


def _profile(fn, args_fn, steps: int, profile_dir: str, out) -> None:
    """A trace of `steps` more calls for TensorBoard's profiler or Perfetto."""
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
        for i in range(steps):
            with jax.profiler.StepTraceAnnotation("step", step_num=i):
                out = jax.block_until_ready(fn(*args_fn(out)))


def bench_train(config, *, steps, warmup, data_batches=10, profile_dir="", peak=None):
    """One JSON-ready record for `config`'s train step at its batch size."""
    run_setup = build.setup(config)
    family, mesh = run_setup.family, run_setup.mesh
    train_iter = data.make_train(
        config.data, batch_size=config.train.batch_size, mesh=mesh
    )
    batch = next(train_iter)  # every timed step reuses it
    state = run_setup.init(run_setup.init_key)
    start = time.perf_counter()
    compiled = run_setup.train_step.lower(state, batch, run_setup.step_key).compile()
    compile_s = time.perf_counter() - start

    step_args = (batch, run_setup.step_key, run_setup.train_step.values)

    def args_fn(out):  # the state is donated: each step consumes the last one's
        return (state if out is None else out[0], *step_args)

    times, out = _time_calls(compiled, args_fn, steps, warmup)
    record = _base_record(config, run_setup, "train", steps, warmup, compile_s)
    record |= _percentiles(times) | _memory(compiled)
    batch_size = config.train.batch_size
    record["examples_per_s"] = batch_size / record["step_s_median"]
    if "tokens" in family.per_example:
        record["tokens_per_s"] = record["examples_per_s"] * family.per_example["tokens"]
    record["flops_per_step_xla"] = _xla_flops(compiled)
    if "flops" in family.per_example:
        record["flops_per_step_analytic"] = family.per_example["flops"] * batch_size
    record["peak_flops"], record["peak_flops_source"] = peak or metrics.peak_flops(
        config.train.peak_flops_per_device
    )
    for name, flops in (
        ("mfu", record["flops_per_step_xla"]),
        ("mfu_analytic", record["flops_per_step_analytic"]),
    ):
        if flops:
            record[name] = flops / record["step_s_median"] / record["peak_flops"]
    record |= _data_rate(train_iter, config.train.batch_size, data_batches)
    needed = 1.0 / record["step_s_median"]
    if record["data_batches_per_s"] < needed:
        record["data_warning"] = (
            f"the input pipeline gives {record['data_batches_per_s']:.1f} batches/s "
            f"but the step consumes {needed:.1f}/s: training would wait on data "
            "(use an array_record source, fewer per-example transforms, or more "
            "grain workers)"
        )
    if profile_dir:
        _profile(compiled, args_fn, 3, profile_dir, out)
        record["profile_dir"] = profile_dir
    return record


def bench_sampler(config, *, steps, warmup, num_samples):
    """One record timing the family's sampler on freshly initialised EMA params
    (images/s; decode tokens/s for the LM). FLOPs are not reported: XLA's cost
    analysis counts a while loop's body once."""
    run_setup = build.setup(config)
    family = run_setup.family
    if family.sample is None:
        raise ValueError(f"family {config.family!r} has no sampler to time")
    state = run_setup.init(run_setup.init_key)
    sample_fn = jax.jit(
        family.sample,
        static_argnums=2,
        out_shardings=sharding.replicated(run_setup.mesh),
    )
    key = run_setup.eval_key
    start = time.perf_counter()
    compiled = sample_fn.lower(state.sampling_params, key, num_samples).compile()
    compile_s = time.perf_counter() - start
    times, _ = _time_calls(
        compiled, lambda out: (state.sampling_params, key), steps, warmup
    )
    record = _base_record(config, run_setup, "sample", steps, warmup, compile_s)
    record |= _percentiles(times) | _memory(compiled)
    record["batch_size"] = num_samples
    record["examples_per_s"] = num_samples / record["step_s_median"]
    if "tokens" in family.per_example:  # every row decodes seq_len - 1 tokens
        record["tokens_per_s"] = record["examples_per_s"] * family.per_example["tokens"]
    return record


def _bytes(tree) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _count(trees) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(trees))


def _base_record(config, run_setup, mode, steps, warmup, compile_s) -> dict:
    params = run_setup.abstract_state.params
    roles = [r for r in run_setup.family.roles if r in params]
    return dict.fromkeys(FIELDS) | {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "family": config.family,
        "model": config.model.name,
        **provenance.platform(),
        "mesh": dict(run_setup.mesh.shape),
        "batch_size": config.train.batch_size,
        "num_params": _count([params[r] for r in roles]),
        # LoRA's base, latent diffusion's autoencoder: no optimizer, no EMA.
        "frozen_params": _count([params[k] for k in run_setup.family.frozen]),
        # The train state a device holds: params, optimizer moments, EMA.
        "state_bytes": _bytes(run_setup.abstract_state),
        "opt_state_bytes": _bytes(run_setup.abstract_state.opt_state),
        "ema_bytes": _bytes(run_setup.abstract_state.ema_params),
        "steps": steps,
        "warmup": warmup,
        "compile_s": compile_s,
        # What the row ran on: a stray flag (the tests' -O0) shows here.
        **provenance.software(),
        "dtype": config.model.get("dtype", "float32"),
    }


def format_table(records: list[dict]) -> str:
    """One column per record: the fields a reader compares, in readable units."""
    rows = [
        ("batch", "batch_size", "{:d}"),
        ("trained params M", "num_params", "{:.3f}", 1e-6),
        ("frozen params M", "frozen_params", "{:.3f}", 1e-6),
        ("state MiB", "state_bytes", "{:.1f}", 2**-20),
        ("optimizer MiB", "opt_state_bytes", "{:.2f}", 2**-20),
        ("EMA MiB", "ema_bytes", "{:.2f}", 2**-20),
        ("compile s", "compile_s", "{:.2f}"),
        ("ms/step median", "step_s_median", "{:.2f}", 1e3),
        ("ms/step p10", "step_s_p10", "{:.2f}", 1e3),
        ("ms/step p90", "step_s_p90", "{:.2f}", 1e3),
        ("examples/s", "examples_per_s", "{:.1f}"),
        ("tokens/s", "tokens_per_s", "{:.0f}"),
        ("GFLOP/step (XLA)", "flops_per_step_xla", "{:.3f}", 1e-9),
        ("GFLOP/step (6N+attn)", "flops_per_step_analytic", "{:.3f}", 1e-9),
        ("MFU (XLA flops)", "mfu", "{:.3f}"),
        ("MFU (6N+attn)", "mfu_analytic", "{:.3f}"),
        ("peak memory MiB", "memory_peak_bytes", "{:.1f}", 2**-20),
        ("data batches/s", "data_batches_per_s", "{:.1f}"),
    ]
    lines = []
    for label, key, fmt, *scale in rows:
        values = [r.get(key) for r in records]
        if all(v is None for v in values):
            continue
        cells = [
            "-" if v is None else fmt.format(v * scale[0] if scale else v)
            for v in values
        ]
        lines.append(f"{label:<22}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def append_json(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def run(
    config,
    *,
    label="",
    steps=20,
    warmup=3,
    batch_sizes=(),
    mode="train",
    num_samples=0,
    data_batches=10,
    profile="",
    out="",
) -> list[dict]:
    """Benchmarks `config`'s train step (mode "train") or sampler ("sample") at
    each batch size; returns (and appends to `out`) the records."""
    if mode not in ("train", "sample"):
        raise ValueError(f"unknown bench mode {mode!r}; valid: train, sample")
    records = []
    peak = None
    for batch_size in batch_sizes or [config.train.batch_size]:
        cfg = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
        cfg.train.batch_size = int(batch_size)
        if mode == "sample":
            samples = num_samples or cfg.train.batch_size
            record = bench_sampler(cfg, steps=steps, warmup=warmup, num_samples=samples)
        else:
            record = bench_train(
                cfg,
                steps=steps,
                warmup=warmup,
                data_batches=data_batches,
                profile_dir=profile if not records else "",
                peak=peak,
            )
            peak = (record["peak_flops"], record["peak_flops_source"])
        record["config"] = label
        records.append(record)
        if out and jax.process_index() == 0:
            append_json(out, record)
    return records
