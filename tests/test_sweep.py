"""`gen-jax sweep` on Optuna, run as users run it: trials are `gen-jax train`
processes (vae_digits:smoke, 8 steps, held-out loss every 2), on SQLite and on
a real PostgreSQL server the tests start and stop; the study is read back with
Optuna's own `load_study`."""

import pathlib
import shutil
import signal
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

from gen_jax import sweep
from tests import helpers

CONFIG = "--config=configs/vae_digits.py:smoke"
SHORT = ["--config.train.num_steps=8", "--config.evals.heldout.every_steps=2"]


def _space(
    tmp_path,
    suggest: str,
    pruner: str = '{"name": "none"}',
    metric: str = '"eval/heldout/model/loss"',
    direction: str = '"minimize"',
    sampler: str = '{"name": "random", "seed": 0}',
) -> str:
    """A space file: the held-out loss, minimised, unless told; `suggest`'s body."""
    path = tmp_path / "space.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import ml_collections

            def get_space():
                return ml_collections.ConfigDict({{
                    "metric": {metric},
                    "direction": {direction},
                    "sampler": {sampler},
                    "pruner": {pruner},
                }})

            def suggest(trial):
            """
        )
        + textwrap.indent(textwrap.dedent(suggest).strip(), "    ")
        + "\n"
    )
    return str(path)


def _sweep(*args: str, check: bool = True):
    result = helpers.gen_jax("sweep", CONFIG, *SHORT, *args, devices=1)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _study(sweep_dir, storage=None) -> optuna.Study:
    storage = storage or f"sqlite:///{pathlib.Path(sweep_dir).resolve()}/study.db"
    return optuna.load_study(study_name=pathlib.Path(sweep_dir).name, storage=storage)


def test_a_bad_space_key_exits_2_before_any_trial(tmp_path):
    sweep_dir = tmp_path / "bad"
    body = 'return {"optim.model.lrr": trial.suggest_float("lr", 1e-4, 1e-2)}'
    result = _sweep(
        f"--space={_space(tmp_path, body)}",
        f"--sweep_dir={sweep_dir}",
        "--max_trials=1",
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: space key") and "lrr" in lines[-1]
    assert not sweep_dir.exists() or not list(sweep_dir.glob("trial_*"))
    # A value of the wrong type: the same check, in process.
    from configs import vae_digits

    body = 'return {"train.num_steps": trial.suggest_float("n", 1, 2)}'
    with pytest.raises(sweep.SweepError, match="space key 'train.num_steps'"):
        sweep.check_space(
            sweep.load_space(_space(tmp_path, body)), vae_digits.get_config("smoke")
        )


def test_a_dry_run_checks_the_space_and_shows_the_rungs(tmp_path):
    """--dry_run runs the sweep's checks and prints its plan, trains nothing:
    the shipped fm_digits space with its docstring's overrides prunes at 600
    and 1800; at the config's own evaluations (every 2000 steps, the last)
    nothing would be pruned, and it says so; a misspelt pruner argument is
    the space's one-line error, exit 2."""
    sweep_dir = tmp_path / "fm"
    args = [
        "--config=configs/fm_digits.py",
        "--space=configs/sweeps/fm_digits.py",
        f"--sweep_dir={sweep_dir}",
        "--n_trials=24",
        "--dry_run",
    ]
    every = ["--config.train.num_steps=4000", "--config.evals.quality.every_steps=600"]
    result = helpers.gen_jax("sweep", *args, *every)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rungs at steps 600, 1800 of 4000" in result.stdout
    assert "diffusion.p_mean, diffusion.t_mean" in result.stdout  # both branches
    assert not sweep_dir.exists()
    result = helpers.gen_jax("sweep", *args)
    assert "no rung before step 2000, nothing pruned" in result.stdout
    space = pathlib.Path(helpers.ROOT, "configs/sweeps/fm_digits.py").read_text()
    bad = tmp_path / "bad.py"
    bad.write_text(space.replace('"reduction_factor"', '"reduction_factr"'))
    result = helpers.gen_jax("sweep", *args[:1], f"--space={bad}", *args[2:])
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: pruner SuccessiveHalvingPruner: ")
        and "reduction_factr" in result.stderr
    )


def test_a_conditional_space_checks_every_branch():
    """fm_digits' space sets t_mean only for flow, p_mean only for edm; both
    branches are drawn and checked against the config."""
    from configs import fm_digits

    space = sweep.load_space(f"{helpers.ROOT}/configs/sweeps/fm_digits.py")
    sweep.check_space(space, fm_digits.get_config())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    keys = set()
    for _ in range(16):
        keys |= set(space.suggest(study.ask()))
    assert {"diffusion.t_mean", "diffusion.p_mean"} <= keys


def test_pruner_rungs_fall_on_evaluations():
    asha = sweep.make_pruner({"name": "asha", "reduction_factor": 3}, 200)
    assert asha._min_resource == 200  # "eval": the evaluator's every_steps
    later = sweep.make_pruner({"name": "asha", "min_resource": 600}, 200)
    assert later._min_resource == 600
    with pytest.raises(sweep.SweepError, match="min_resource 500 is not a multiple"):
        sweep.make_pruner({"name": "hyperband", "min_resource": 500}, 200)


def test_a_resumed_runs_repeated_steps_are_reported_once(tmp_path):
    """A run resumed from a checkpoint before its last logged step drops the
    rows after it (the file shrinks under the driver) and logs those steps
    again: the driver reads on from the file's start and reports each step to
    Optuna once (Optuna warns at, and ignores, a second report)."""
    import types
    import warnings

    from gen_jax import sweep_driver

    metric = "eval/heldout/model/loss"

    def rows(*steps):
        return "".join(f'{{"step": {s}, "{metric}": {(10 - s) / 10}}}\n' for s in steps)

    path = tmp_path / "metrics.jsonl"
    space = sweep.Space((metric,), ("minimize",), {}, {}, lambda t: {})
    study = optuna.create_study()
    owner = types.SimpleNamespace(space=space)
    watch = sweep_driver.Watch(owner, study.ask(), tmp_path, tmp_path, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "already reported" warning
        path.write_text(rows(2, 4, 6))  # killed after step 6, saved at 2
        watch._read()
        path.write_text(rows(2))  # resumed at 2: later rows dropped
        watch._read()
        # and logged again, with a row the first time had not (offsets move)
        path.write_text(rows(2) + '{"step": 3, "model/loss": 0.5}\n' + rows(4, 6, 8))
        watch._read()
    assert study.trials[0].intermediate_values == {2: 0.8, 4: 0.6, 6: 0.4, 8: 0.2}
    assert watch.last[metric] == (8, 0.2) and watch.step == 8


def test_multi_objective_spaces_are_checked(tmp_path):
    """A config.<key> objective must name a number of the config; a study of
    several metrics takes no pruner (Optuna prunes single objectives only)."""
    from configs import vae_digits

    body = 'return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 2e-3)}'
    two = '("eval/heldout/model/loss", "config.train.num_steps")'
    both = '("minimize", "minimize")'
    space = sweep.load_space(_space(tmp_path, body, metric=two, direction=both))
    assert space.multi and space.eval_metrics == ("eval/heldout/model/loss",)
    sweep.check_space(space, vae_digits.get_config("smoke"))
    for kwargs, message in (
        (
            {"metric": two, "direction": both, "pruner": '{"name": "median"}'},
            "pruner none",
        ),
        ({"metric": two}, "2 metrics but 1 directions"),
        ({"metric": '"heldout/loss"'}, "neither eval/... nor config.<key>"),
    ):
        with pytest.raises(sweep.SweepError, match=message):
            sweep.load_space(_space(tmp_path, body, **kwargs))
    bad = _space(
        tmp_path, body, metric='("eval/a/b", "config.train.nope")', direction=both
    )
    with pytest.raises(sweep.SweepError, match="config.train.nope"):
        sweep.check_space(sweep.load_space(bad), vae_digits.get_config("smoke"))


@pytest.mark.slow
def test_failed_and_pruned_trials(tmp_path):
    """A diverging trial (exit 1) is FAIL and the sweep goes on; a pruned trial
    was stopped by SIGTERM, saved a checkpoint and exited 0."""
    body = """
    lr = 1e9 if trial.number == 0 else 1e-3
    return {"optim.model.lr": trial.suggest_float("lr", lr, lr)}
    """
    sweep_dir = tmp_path / "fail"
    _sweep(
        f"--space={_space(tmp_path, body)}",
        f"--sweep_dir={sweep_dir}",
        "--max_trials=2",
    )
    states = [t.state for t in _study(sweep_dir).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
    assert "non-finite" in (sweep_dir / "trial_0" / "train.log").read_text()

    sweep_dir = tmp_path / "prune"
    space = _space(
        tmp_path,
        'return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 2e-3)}',
        pruner='{"name": "threshold", "upper": 1.0}',  # the loss is ~44: pruned
    )
    long = "--config.train.num_steps=400"  # the SIGTERM lands well before its end
    _sweep(f"--space={space}", f"--sweep_dir={sweep_dir}", "--max_trials=1", long)
    (trial,) = _study(sweep_dir).trials
    assert trial.state == TrialState.PRUNED and trial.user_attrs["exit_code"] == 0
    assert min(trial.intermediate_values) == 2 and max(trial.intermediate_values) < 400
    saved = [
        int(p.name)
        for p in (sweep_dir / "trial_0" / "checkpoints").iterdir()
        if p.name.isdigit()
    ]
    assert saved and max(saved) < 400  # the step it was stopped at


def _two_workers(tmp_path, storage_args: list[str], sweep_dir) -> None:
    space = _space(
        tmp_path, 'return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 3e-3)}'
    )
    args = [
        CONFIG,
        *SHORT,
        f"--space={space}",
        f"--sweep_dir={sweep_dir}",
        "--max_trials=3",
    ]
    procs = [
        helpers.start_cli("sweep", *args, *storage_args, devices=1) for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_workers_stop_at_exactly_max_trials_on_sqlite(tmp_path):
    sweep_dir = tmp_path / "two"
    _two_workers(tmp_path, [], sweep_dir)
    trials = _study(sweep_dir).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["lr"] for t in trials}) == 3  # per-worker sampler seeds


@pytest.fixture
def postgres():
    """A PostgreSQL server the test starts and stops (helpers.postgres_server)."""
    if not shutil.which("initdb"):
        pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are not on PATH")
    with helpers.postgres_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres):
    sweep_dir = tmp_path / "pg_two"
    _two_workers(tmp_path, [f"--storage={postgres}"], sweep_dir)
    trials = _study(sweep_dir, postgres).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["command"].startswith("gen-jax train") for t in trials)


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_and_resumes(tmp_path):
    """SIGKILL the worker mid-trial: its run gets SIGTERM (saves, exits); a new
    worker finds the trial stale, retries it with the same parameters and
    the run resumes its checkpoint instead of starting over."""
    space = _space(
        tmp_path, 'return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 2e-3)}'
    )
    sweep_dir = tmp_path / "kill"
    args = [
        CONFIG,
        "--config.train.num_steps=200",
        "--config.train.ckpt_every_steps=4",
        "--config.evals.heldout.every_steps=4",
        f"--space={space}",
        f"--sweep_dir={sweep_dir}",
        "--max_trials=1",
        "--heartbeat_s=1",
        "--grace_s=3",
    ]
    worker = helpers.start_cli("sweep", *args, devices=1)
    checkpoints = sweep_dir / "trial_0" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (
        checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())
    ):
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period
    _sweep(*args[1:], check=True)
    trials = _study(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
    assert sweep.root_number(trials[1]) == 0
    steps = [
        row["step"]
        for row in helpers.read_metrics(str(sweep_dir / "trial_0"))
        if "model/loss" in row
    ]
    assert steps == sorted(steps) and len(steps) == len(
        set(steps)
    )  # resumed, not redone
    assert steps[-1] == 200


@pytest.mark.slow
def test_a_multi_objective_study_reports_its_pareto_front(tmp_path):
    """Held-out loss against training steps, NSGA-II: every trial completes
    with both values (the steps its config trained), and the report lists the
    Pareto front, writes the front's commands and plots it."""
    space = _space(
        tmp_path,
        'return {"train.num_steps": trial.suggest_int("steps", 2, 8, step=2)}',
        metric='("eval/heldout/model/loss", "config.train.num_steps")',
        direction='("minimize", "minimize")',
        sampler='{"name": "nsga2", "seed": 0, "population_size": 2}',
    )
    sweep_dir = tmp_path / "pareto"
    _sweep(f"--space={space}", f"--sweep_dir={sweep_dir}", "--max_trials=3")
    study = _study(sweep_dir)
    assert study.metric_names == ["eval/heldout/model/loss", "config.train.num_steps"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert t.values[1] == t.params["steps"] == t.user_attrs["steps"]
        assert t.values[0] > 0
    report = _sweep("--report", f"--sweep_dir={sweep_dir}").stdout
    front = [t.number for t in sorted(study.best_trials, key=lambda t: t.values)]
    assert f"Pareto front: trials {', '.join(map(str, front))}" in report
    commands = (sweep_dir / "pareto_commands.txt").read_text()
    assert commands.count("gen-jax train") == len(front)
    assert (sweep_dir / "pareto_front.png").stat().st_size > 0


@pytest.mark.slow
def test_a_two_process_trial_runs_through_local_sh(tmp_path):
    """--launcher='launch/local.sh 2 1 --': the trial is two gen_jax processes
    (one CPU device each), its logs in the trial's directory."""
    space = _space(
        tmp_path, 'return {"optim.model.lr": trial.suggest_float("lr", 1e-3, 2e-3)}'
    )
    sweep_dir = tmp_path / "two_proc"
    launcher = f"{helpers.ROOT}/launch/local.sh 2 1 --"
    _sweep(
        f"--space={space}",
        f"--sweep_dir={sweep_dir}",
        "--max_trials=1",
        f"--launcher={launcher}",
    )
    (trial,) = _study(sweep_dir).trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["launcher"].endswith("local.sh 2 1 --")
    assert trial.user_attrs["command"].startswith("gen-jax train --config=")
    for i in range(2):  # each process of the trial trained to its end
        log = (sweep_dir / "trial_0" / f"local_{i}.log").read_text()
        assert f"process {i} of 2" in log and "step 8/8" in log, log[-2000:]
