"""`gen-jax sweep --report`: a study's trials ranked (number, state,
parameters, metric, steps, wall time), its best trial as a ready command line
(SWEEP_DIR/best_command.txt), and Optuna's matplotlib plots (optimisation
history, parallel coordinates, parameter importances) as PNGs in the sweep
directory."""

import pathlib

import optuna
from optuna.trial import TrialState


def _row(t: optuna.trial.FrozenTrial) -> list[str]:
    steps = max(t.intermediate_values, default="-")
    wall = "-"
    if t.datetime_start and t.datetime_complete:
        wall = f"{(t.datetime_complete - t.datetime_start).total_seconds():.0f} s"
    value = "-" if t.value is None else f"{t.value:.5g}"
    params = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in t.params.items()
    )
    return [str(t.number), t.state.name, params, value, str(steps), wall]


def report(storage: str, study_name: str, sweep_dir: pathlib.Path) -> str:
    """The report's text; writes best_command.txt and the plots."""
    study = optuna.load_study(study_name=study_name, storage=storage)
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

    header = ["trial", "state", "parameters", "metric", "steps", "wall"]
    rows = [header] + [_row(t) for t in sorted(trials, key=rank)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        command = best.user_attrs.get("command", "")
        (sweep_dir / "best_command.txt").write_text(command + "\n")
        lines += ["", f"best: trial {best.number}, {best.value:.5g}", command]
    lines += [""] + _plots(study, sweep_dir)
    return "\n".join(lines)


def _plots(study: optuna.Study, sweep_dir: pathlib.Path) -> list[str]:
    """Optuna's matplotlib plots as PNGs; a line per plot written or skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as plots
    except ImportError:
        return ["plots: matplotlib is not installed (pip install -e '.[sweep]')"]
    out = []
    for name, fn in (
        ("optimization_history", plots.plot_optimization_history),
        ("parallel_coordinate", plots.plot_parallel_coordinate),
        ("param_importances", plots.plot_param_importances),
    ):
        try:
            axes = fn(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            path = sweep_dir / f"{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            out.append(f"plot: {path}")
        except (ValueError, RuntimeError) as e:  # too few trials for it
            out.append(f"plot {name}: skipped ({e})")
    return out
