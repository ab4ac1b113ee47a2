"""Entry point: `python -m gen_jax.main --config=configs/X.py[:variant] --workdir=DIR`.

Parses flags (config errors end the run in one line, before any compile),
initialises multi-process JAX when asked, and hands over to `train.run`.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gen_jax import cli_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. configs/vae_digits.py:smoke.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Run directory: checkpoints, metrics, samples. Reusing it resumes the run.",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize(). With no address/"
    "count/id flags JAX auto-detects the cluster (TPU VM slices, SLURM, ...).",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies --distributed)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "Show tracebacks for configuration errors."
)


def _init_distributed() -> None:
    import jax

    if not (_DISTRIBUTED.value or _COORDINATOR.value):
        return
    # CPU hosts need a collectives backend for cross-process all-reduce.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _quiet_libraries() -> None:
    """Keeps INFO lines from gen_jax only (orbax logs each save in ~30 lines);
    warnings and errors from every library still show. --v=1 shows all."""
    if logging.get_verbosity() <= logging.INFO:
        logging.get_absl_handler().addFilter(
            lambda r: (
                r.levelno > logging.converter.STANDARD_INFO
                or f"{os.sep}gen_jax{os.sep}" in r.pathname
            )
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("--config and --workdir are required")
    _quiet_libraries()
    _init_distributed()
    from gen_jax import checkpoint, metrics, train  # after flags: keeps --help fast

    try:
        train.run(_CONFIG.value, _WORKDIR.value)
    except (
        ValueError,
        FileNotFoundError,
        metrics.NonFiniteLossError,
        checkpoint.CheckpointError,
    ) as e:
        if _TRACEBACK.value:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    """The `gen-jax` console script: trains; `gen-jax evaluate ...` scores a run,
    `gen-jax bench ...` times a config's train step or sampler."""
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        from gen_jax import evaluate

        evaluate.cli(sys.argv[:1] + sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        from gen_jax import bench

        bench.cli(sys.argv[:1] + sys.argv[2:])
        return
    app.run(main, flags_parser=cli_flags.parse)


if __name__ == "__main__":
    cli()
