"""`gen-jax sweep --config=configs/X.py --space=configs/sweeps/X.py
--sweep_dir=DIR [flags]`: hyper-parameter search on Optuna.

Each trial is `gen-jax train` in DIR/trial_N with the overrides the space's
`suggest(trial)` draws (after the config's own --config.a.b=v); its
evaluations are reported to Optuna as they are logged, and a pruned trial is
stopped by SIGTERM (it saves and exits 0). Several `gen-jax sweep` processes
on one --storage and --study share the study (a cluster's workers);
--max_trials bounds the study as a whole. A worker that dies leaves its trial
to be retried with the same parameters, resuming its workdir.

  gen-jax sweep --config=configs/vae_digits.py \\
    --space=configs/sweeps/vae_digits.py --sweep_dir=runs/sweeps/vae_lr --n_trials=24
  gen-jax sweep --report --sweep_dir=runs/sweeps/vae_lr

Storage: sqlite:///DIR/study.db unless --storage (postgresql://... across
hosts); study: DIR's name unless --study.
"""

from absl import app, flags

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS
_ARGV: list[str] = []  # the command line, for the trials' --config flags


def _define_flags() -> None:
    tool_flags.define_config("The config every trial trains.")
    flags.DEFINE_string("space", None, "The space file (configs/sweeps/*.py).")
    flags.DEFINE_string("sweep_dir", None, "Trials' workdirs, the default storage.")
    flags.DEFINE_integer("n_trials", 0, "Trials this process runs (0: max_trials).")
    flags.DEFINE_integer("max_trials", 0, "Trials in the whole study (0: no bound).")
    flags.DEFINE_string("storage", None, "Optuna storage URL (default: SQLite in DIR).")
    flags.DEFINE_string("study", None, "Study name (default: DIR's name).")
    flags.DEFINE_integer("workers", 1, "Trials run at once by this process.")
    flags.DEFINE_string(
        "launcher",
        "",
        "A command each trial's `gen_jax.main train ...` arguments are appended "
        "to, which forwards SIGTERM: 'launch/local.sh 2 1 --' (a 2-process "
        "trial), 'launch/tpu_vm.sh run --name=NAME --zone=ZONE --' (a TPU VM "
        "slice; with --trial_root=gs://...). Default: one local process.",
    )
    flags.DEFINE_string(
        "trial_root",
        None,
        "Where trials' workdirs go (default: --sweep_dir); a gs:// URL every "
        "TPU VM worker shares. Logs and the SQLite study stay in --sweep_dir.",
    )
    flags.DEFINE_integer("heartbeat_s", 30, "Seconds between a trial's heartbeats.")
    flags.DEFINE_integer(
        "grace_s", 120, "Seconds without a heartbeat before a trial is retried."
    )
    flags.DEFINE_integer("max_retry", 3, "Retries of a trial whose worker died.")
    flags.DEFINE_bool(
        "report", False, "Print the ranked trials, write plots; no trials."
    )


def _storage(sweep_dir) -> str:
    return FLAGS.storage or f"sqlite:///{sweep_dir.resolve() / 'study.db'}"


def _where():
    """The sweep directory and the study's name."""
    import pathlib

    tool_flags.require("sweep_dir")
    sweep_dir = pathlib.Path(FLAGS.sweep_dir)
    return sweep_dir, FLAGS.study or sweep_dir.resolve().name


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sweep_dir, study_name = _where()
    if FLAGS.report:
        from gen_jax import sweep_report

        print(sweep_report.report(_storage(sweep_dir), study_name, sweep_dir))
        return
    _make_sweep(sweep_dir, study_name).run()


def _make_sweep(sweep_dir, study_name: str):
    tool_flags.require("config", "space")
    if not (FLAGS.n_trials or FLAGS.max_trials):
        raise app.UsageError("give --n_trials or --max_trials (or both)")
    import shlex

    from gen_jax import sweep, sweep_driver

    space = sweep.load_space(FLAGS.space)
    spec = next(a.split("=", 1)[1] for a in _ARGV if a.startswith("--config="))
    return sweep_driver.Sweep(
        config_spec=spec,
        config=FLAGS.config,
        base_overrides=[a for a in _ARGV if a.startswith("--config.")],
        space=space,
        sweep_dir=sweep_dir,
        storage_url=_storage(sweep_dir),
        study_name=study_name,
        max_trials=FLAGS.max_trials,
        n_trials=FLAGS.n_trials,
        workers=FLAGS.workers,
        trial_root=FLAGS.trial_root or "",
        launcher=shlex.split(FLAGS.launcher),
        heartbeat_s=FLAGS.heartbeat_s,
        grace_s=FLAGS.grace_s,
        max_retry=FLAGS.max_retry,
    )


def _dry_run() -> None:
    """The sweep's checks (the space against the config, sampler, pruner),
    and its plan: storage, study, metric, keys, pruner rungs."""
    if FLAGS.report:
        return
    plan = _make_sweep(*_where())
    keys, pruner = plan.check()
    space = plan.space
    print(f"storage {plan.storage_url}, study {plan.study_name!r}")
    print(f"{' / '.join(space.directions)} {', '.join(space.metrics)}")
    print(f"sampler {space.sampler}; trials set {', '.join(keys)}")
    rungs = ""
    if pruner["name"] == "asha" and isinstance(pruner["min_resource"], int):
        steps = plan.config.train.num_steps
        at = ", ".join(map(str, _asha_rungs(pruner, steps)))
        rungs = f": rungs at steps {at} of {steps}"
        if not at:
            rungs = (
                f": no rung before step {steps}, nothing pruned (evaluate more often)"
            )
    print(f"pruner {pruner}{rungs}")


def _asha_rungs(spec: dict, num_steps: int) -> list[int]:
    """The steps at which ASHA (a `pruner_spec`) compares runs: min_resource ×
    reduction_factor ** (k + min_early_stopping_rate), Optuna's defaults."""
    first, factor = spec["min_resource"], spec.get("reduction_factor", 4)
    rate = spec.get("min_early_stopping_rate", 0)
    rungs = [first * factor ** (rate + k) for k in range(num_steps.bit_length())]
    return [r for r in rungs if r < num_steps]


def cli(argv: list[str]) -> None:
    _ARGV[:] = argv
    _define_flags()
    tool_flags.run(main, __name__, argv, dry_run=_dry_run)
