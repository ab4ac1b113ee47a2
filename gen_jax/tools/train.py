"""`gen-jax train --config=configs/X.py[:variant] --workdir=DIR [--config.a.b=v]`.

Trains (or resumes) a run. Multi-process: --coordinator_address, --num_processes
and --process_id, or --distributed to let JAX detect a TPU slice or Slurm job.
SIGTERM (preemption) saves a checkpoint at the current step and exits 0.
"""

from absl import app, flags, logging

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    tool_flags.define_config()
    tool_flags.define_workdir(
        "Run directory: checkpoints, metrics, samples. Reusing it resumes the run."
    )
    flags.DEFINE_bool(
        "distributed",
        False,
        "Call jax.distributed.initialize(); with no address/count/id flags JAX "
        "auto-detects the cluster (TPU VM slices, Slurm, ...).",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0 (implies --distributed)."
    )
    flags.DEFINE_integer("num_processes", None, "Total processes.")
    flags.DEFINE_integer("process_id", None, "This process's index.")


def _init_distributed() -> None:
    import jax

    if not (FLAGS.distributed or FLAGS.coordinator_address):
        return
    # CPU hosts need a collectives backend for cross-process all-reduce.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tool_flags.require("config", "workdir")
    _init_distributed()
    from gen_jax import train  # after flags: keeps --help fast

    train.run(FLAGS.config, FLAGS.workdir)


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
