"""`gen-jax sweep --report`: a study's trials ranked (number, state,
parameters, metric, steps, wall time), its best trial as a ready command line
(SWEEP_DIR/best_command.txt), and Optuna's matplotlib plots (optimisation
history, parallel coordinates, parameter importances) as PNGs in the sweep
directory. A multi-objective study lists its Pareto front first, writes each
front trial's command (pareto_commands.txt) and plots the front."""

import pathlib
import warnings

import optuna

# Optuna calls its Pareto-front plot "experimental" (since 2.8); used knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
from optuna.trial import TrialState


def _row(t: optuna.trial.FrozenTrial) -> list[str]:
    steps = t.user_attrs.get("steps", max(t.intermediate_values, default="-"))
    wall = "-"
    if t.datetime_start and t.datetime_complete:
        wall = f"{(t.datetime_complete - t.datetime_start).total_seconds():.0f} s"
    value = "-" if t.values is None else " / ".join(f"{v:.5g}" for v in t.values)
    params = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in t.params.items()
    )
    return [str(t.number), t.state.name, params, value, str(steps), wall]


def report(storage: str, study_name: str, sweep_dir: pathlib.Path) -> str:
    """The report's text; writes best_command.txt and the plots."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    if len(study.directions) > 1:
        return _pareto_report(study, sweep_dir)
    trials = study.get_trials(deepcopy=False)
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1

    # Completed by value, then pruned by their last reported value, then the rest.
    def rank(t):
        last = (
            t.intermediate_values[max(t.intermediate_values)]
            if t.intermediate_values
            else None
        )
        done = t.state == TrialState.COMPLETE
        value = t.value if done else last
        return (not done, value is None, sign * (value or 0.0), t.number)

    lines = _table(study, sorted(trials, key=rank))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        command = best.user_attrs.get("command", "")
        (sweep_dir / "best_command.txt").write_text(command + "\n")
        lines += ["", f"best: trial {best.number}, {best.value:.5g}", command]
    lines += [""] + _plots(study, sweep_dir)
    return "\n".join(lines)


def _table(study: optuna.Study, trials: list) -> list[str]:
    names = " / ".join(study.metric_names or ["metric"] * len(study.directions))
    header = ["trial", "state", "parameters", names, "steps", "wall"]
    rows = [header] + [_row(t) for t in trials]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]


def _pareto_report(study: optuna.Study, sweep_dir: pathlib.Path) -> str:
    """The Pareto front (by its first objective), then the other trials; the
    front's commands in pareto_commands.txt; the front's plot."""
    front = sorted(study.best_trials, key=lambda t: (t.values, t.number))
    on_front = {t.number for t in front}
    rest = [t for t in study.get_trials(deepcopy=False) if t.number not in on_front]
    lines = _table(study, front + rest)
    lines += ["", f"Pareto front: trials {', '.join(str(t.number) for t in front)}"]
    commands = [
        f"# trial {t.number}: {' / '.join(f'{v:.5g}' for v in t.values)}\n"
        + t.user_attrs.get("command", "")
        for t in front
    ]
    if commands:
        (sweep_dir / "pareto_commands.txt").write_text("\n".join(commands) + "\n")
    kwargs = {"target_names": study.metric_names} if study.metric_names else {}
    plots = (("pareto_front", lambda s, p: p.plot_pareto_front(s, **kwargs)),)
    return "\n".join(lines + [""] + _plots(study, sweep_dir, plots))


# (file name, (study, optuna.visualization.matplotlib) -> axes)
SINGLE_PLOTS = (
    ("optimization_history", lambda s, p: p.plot_optimization_history(s)),
    ("parallel_coordinate", lambda s, p: p.plot_parallel_coordinate(s)),
    ("param_importances", lambda s, p: p.plot_param_importances(s)),
)


def _plots(study: optuna.Study, sweep_dir: pathlib.Path, which=None) -> list[str]:
    """Optuna's matplotlib plots as PNGs; a line per plot written or skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as plots
    except ImportError:
        return ["plots: matplotlib is not installed (pip install -e '.[sweep]')"]
    out = []
    for name, fn in which or SINGLE_PLOTS:
        try:
            axes = fn(study, plots)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            path = sweep_dir / f"{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            out.append(f"plot: {path}")
        except (ValueError, RuntimeError) as e:  # too few trials for it
            out.append(f"plot {name}: skipped ({e})")
    return out
