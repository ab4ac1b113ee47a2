"""`gen-jax bench --config=configs/X.py[:variant] [--config.a=b ...] [flags]`.

Times a config's real train step (`--mode=train`, training's own code path and
shardings) or its sampler (`--mode=sample`): compile time, step time
(median/p10/p90 of --timed_steps after --warmup_steps, each blocked until
ready), examples/s (tokens/s for the LM), FLOPs, MFU, peak memory and the input
pipeline's rate; prints a table and appends one JSON line per batch size to --out.

  gen-jax bench --config=configs/lm_pydoc.py --batch_sizes=8,16,32
  gen-jax bench --config=configs/ddpm_digits.py --mode=sample --sampler=ddim --sampler_steps=50
  gen-jax bench --config=configs/gan_digits.py --profile=/tmp/trace
"""

import functools

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_config()
    tool_flags.define_num_samples(0, "Sampler batch (0: train.batch_size).")
    tool_flags.define_sampler()
    flags.DEFINE_enum("mode", "train", ["train", "sample"], "What to time.")
    flags.DEFINE_integer("timed_steps", 20, "Timed calls.")
    flags.DEFINE_integer("warmup_steps", 3, "Untimed calls after compiling.")
    flags.DEFINE_list(
        "batch_sizes", [], "Sweep these batch sizes (default: the config's)."
    )
    flags.DEFINE_integer("data_batches", 10, "Batches to time the input pipeline on.")
    flags.DEFINE_string(
        "profile", "", "Write a trace of 3 steps here (TensorBoard/Perfetto)."
    )
    flags.DEFINE_string("out", "bench.jsonl", "Append one JSON line per run here.")


def main(argv: list[str], label: str = "") -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("config")
    from gen_jax import bench

    config = FLAGS.config
    tool_flags.apply_sampler_overrides(config, "this config")
    records = bench.run(
        config,
        label=label,
        steps=FLAGS.timed_steps,
        warmup=FLAGS.warmup_steps,
        batch_sizes=FLAGS.batch_sizes,
        mode=FLAGS.mode,
        num_samples=FLAGS.num_samples,
        data_batches=FLAGS.data_batches,
        profile=FLAGS.profile,
        out=FLAGS.out,
    )
    first = records[0]
    print(
        f"{first['mode']} {label}: {first['family']} on {first['num_devices']} x "
        f"{first['device_kind']} (peak {first['peak_flops'] or 0:.3g} FLOP/s, "
        f"{first['peak_flops_source']}); appended to {FLAGS.out}"
    )
    print(bench.format_table(records))
    for r in records:
        if r["data_warning"]:
            print(f"warning (batch {r['batch_size']}): {r['data_warning']}")


def cli(argv: list[str]) -> None:
    _define_flags()
    label = " ".join(a for a in argv[1:] if a.startswith("--config"))
    tool_flags.run(functools.partial(main, label=label), __name__, argv)
