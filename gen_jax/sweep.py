"""Hyper-parameter search on Optuna: the driver of `gen-jax sweep`.

A space file (configs/sweeps/*.py) names the metric (an `eval/...` key of
metrics.jsonl), its direction, the sampler and pruner, and a define-by-run
`suggest(trial) -> {dotted config key: value}`. Each trial is an ordinary run:
`gen-jax train` in its own process and workdir (SWEEP_DIR/trial_N), whose
metrics.jsonl the driver reads as it grows, reporting each evaluation to
Optuna; a pruned run gets SIGTERM (it saves and exits 0: PRUNED), exit 1 is
FAIL (the sweep goes on), exit 2 (a config error) stops the sweep.

Many workers share a study through its storage (SQLite on one host,
PostgreSQL across hosts). `max_trials` bounds the study as a whole: a worker
holds the sweep's lock (a file lock in the sweep directory; a PostgreSQL
advisory lock for postgresql:// storages) from counting the started trials
until its next trial exists. Heartbeats mark a trial whose worker died
(SIGKILL, a lost host) stale; Optuna's RetryHeartbeatStaleTrialCallback
re-queues it with the same parameters, and the retry resumes the original
trial's workdir from its last checkpoint.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import ml_collections
import optuna

# The retry callback and heartbeats are "experimental" in Optuna's terms (since
# 2.8 and 2.9); this module relies on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
from optuna.storages import RetryHeartbeatStaleTrialCallback


class SweepError(ValueError):
    """A space or config error: the sweep stops before (or at) a trial, exit 2."""


class TrialFailed(RuntimeError):
    """A trial's run exited 1: FAIL, and the sweep goes on."""


@dataclasses.dataclass(frozen=True)
class Space:
    # What to optimise: eval/... keys of metrics.jsonl (their last value) or
    # config.<key> (the trial's config value: a cost such as sampler steps);
    # more than one makes a multi-objective study (its Pareto front).
    metrics: tuple[str, ...]
    directions: tuple[str, ...]  # minimize | maximize, one per metric
    sampler: dict  # {"name": tpe | random | cmaes | grid | nsga2, "seed": ...}
    pruner: dict  # {"name": asha | hyperband | median | threshold | none, ...}
    suggest: Callable[[optuna.Trial], dict[str, Any]]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def eval_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m.startswith("eval/"))


def load_space(path: str) -> Space:
    """The space file at `path`: its `get_space()` ConfigDict (metric,
    direction, sampler, pruner) and its `suggest`."""
    import importlib.util

    if not os.path.isfile(path):
        raise SweepError(f"space file {path!r} not found")
    sys.path.insert(
        0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    )
    spec = importlib.util.spec_from_file_location("_gen_jax_space", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [n for n in ("get_space", "suggest") if not hasattr(module, n)]
    if missing:
        raise SweepError(f"space file {path!r} defines no {' or '.join(missing)}")
    c = module.get_space()
    metrics, directions = _tuple(c.metric), _tuple(c.direction)
    if len(metrics) != len(directions):
        raise SweepError(
            f"{path}: {len(metrics)} metrics but {len(directions)} directions"
        )
    if any(d not in ("minimize", "maximize") for d in directions):
        raise SweepError(f"{path}: direction must be minimize or maximize")
    for m in metrics:
        if not m.startswith(("eval/", "config.")):
            raise SweepError(
                f"{path}: metric {m!r} is neither eval/... nor config.<key>"
            )
    if not any(m.startswith("eval/") for m in metrics):
        raise SweepError(f"{path}: no eval/... metric: nothing a trial measures")
    pruner = c.pruner.to_dict()
    if len(metrics) > 1 and pruner.get("name", "none") != "none":
        raise SweepError(
            f"{path}: Optuna prunes single-objective studies only; a study of "
            f"{len(metrics)} metrics needs pruner none"
        )
    return Space(metrics, directions, c.sampler.to_dict(), pruner, module.suggest)


def _tuple(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def flag_value(value) -> str:
    """A value as `--config.key=` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, (float, tuple, list)) else str(value)


def check_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Fails (SweepError, one line) on a key `config` lacks or a value of the
    wrong type."""
    trial_config = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        *head, name = key.split(".")
        parent = trial_config
        for part in head:
            parent = parent.get(part) if hasattr(parent, "get") else None
        if not hasattr(parent, "keys") or name not in parent:
            raise SweepError(f"space key {key!r} is not a config key (config.{key})")
        try:
            parent[name] = value
        except (TypeError, ValueError) as e:
            raise SweepError(f"space key {key!r}: {' '.join(str(e).split())}") from None


def check_space(
    space: Space, config: ml_collections.ConfigDict, draws: int = 32
) -> list[str]:
    """Every key `suggest` gives in `draws` random trials (covering the
    branches of a conditional space) is a config key of the right type;
    returns those keys."""
    for m in space.metrics:
        if m.startswith("config.") and not isinstance(
            config_value(config, m), (int, float)
        ):
            raise SweepError(f"metric {m!r} is not a number in the config")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no in-memory study notice
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    keys = set()
    for _ in range(draws):
        trial = study.ask()
        overrides = space.suggest(trial)
        check_overrides(config, overrides)
        keys |= set(overrides)
        study.tell(trial, 0.0)
    return sorted(keys)


def config_value(config: ml_collections.ConfigDict, metric: str, overrides=None):
    """A config.<key> metric's value in a trial: its override, else the
    config's (a SweepError naming the key when the config lacks it)."""
    key = metric[len("config.") :]
    if overrides and key in overrides:
        return overrides[key]
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise SweepError(f"metric {metric!r} is not a config key")
        node = node[part]
    return node


def make_sampler(spec: dict, seed_offset: int) -> optuna.samplers.BaseSampler:
    """The space's sampler; its seed shifted per worker (the same seed on every
    worker would draw identical first trials)."""
    spec = dict(spec)
    name = spec.pop("name", "tpe")
    if "seed" in spec and spec["seed"] is not None:
        spec["seed"] += seed_offset
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "grid": optuna.samplers.GridSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    if name not in samplers:
        raise SweepError(f"unknown sampler {name!r}; valid: {', '.join(samplers)}")
    return _construct("sampler", samplers[name], spec)


def pruner_spec(spec: dict, eval_every: int) -> dict:
    """The space's pruner with `min_resource: "eval"` (the default) made the
    metric's evaluator's `every_steps`, so rungs fall on evaluations; a number
    of steps must be a multiple of it (e.g. a first rung past an early
    crossing of the learning curves), else rungs fall between evaluations and
    each is judged at the next one, not where the space put it."""
    spec = {"name": "none", **spec}
    first = spec.get("min_resource", "eval")
    if first == "eval" and spec["name"] in ("asha", "hyperband"):
        spec["min_resource"] = eval_every
    elif isinstance(first, int) and first % eval_every:
        raise SweepError(
            f"pruner min_resource {first} is not a multiple of the metric's "
            f"evaluator every_steps ({eval_every}): use a multiple, or 'eval'"
        )
    return spec


def make_pruner(spec: dict, eval_every: int) -> optuna.pruners.BasePruner:
    """The space's pruner (see `pruner_spec`)."""
    spec = pruner_spec(spec, eval_every)
    name = spec.pop("name")
    pruners = {
        "asha": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "median": optuna.pruners.MedianPruner,
        "threshold": optuna.pruners.ThresholdPruner,  # the metric leaves [lower, upper]
        "none": optuna.pruners.NopPruner,
    }
    if name not in pruners:
        raise SweepError(f"unknown pruner {name!r}; valid: {', '.join(pruners)}")
    return _construct("pruner", pruners[name], spec)


def _construct(kind: str, cls, spec: dict):
    """`cls(**spec)`; a misspelt or mistyped argument is the space's error."""
    try:
        return cls(**spec)
    except (TypeError, ValueError) as e:
        raise SweepError(f"{kind} {cls.__name__}: {e}") from None


def make_storage(url: str, *, heartbeat_s: int, grace_s: int, max_retry: int):
    """An RDB storage with heartbeats whose stale trials are retried."""
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry),
    )


def root_number(trial: optuna.trial.FrozenTrial) -> int:
    """The trial a retry repeats (itself if it is no retry)."""
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if number is None else number


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_lock(url: str, name: str):
    import sqlalchemy

    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:7], "big")
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({key})"))
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({key})"))
    engine.dispose()


def sweep_lock(storage_url: str, sweep_dir: pathlib.Path, study_name: str):
    """The lock workers take to count and create trials: PostgreSQL's advisory
    lock for a postgresql:// storage (workers on several hosts), else a file
    lock in the sweep directory, with a process-local lock for threads."""
    if storage_url.startswith("postgresql"):
        return _pg_lock(storage_url, study_name)
    return _locked(_THREADS, _file_lock(sweep_dir / ".lock"))


_THREADS = threading.Lock()


@contextlib.contextmanager
def _locked(lock: threading.Lock, inner):
    with lock, inner:
        yield
