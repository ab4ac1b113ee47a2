"""The workers of `gen-jax sweep` (sweep.py holds the space, samplers,
pruners, storage and locks): each takes the sweep's lock, counts the study's
started trials against `max_trials`, and runs one trial through
`study.optimize` (so Optuna's heartbeat guards it) as a `gen-jax train`
process it watches, reports and prunes.
"""

import ctypes
import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time

import ml_collections
import optuna
from etils import epath
from optuna.trial import TrialState

from gen_jax import provenance, sweep


@dataclasses.dataclass
class Sweep:
    config_spec: str  # --config=, as gen-jax train takes it
    config: ml_collections.ConfigDict  # that config with the user's overrides
    base_overrides: list[str]  # the user's --config.a.b=v flags, verbatim
    space: sweep.Space
    sweep_dir: pathlib.Path
    storage_url: str
    study_name: str
    max_trials: int = 0  # 0: no bound on the study
    n_trials: int = 0  # per process; 0: until max_trials
    workers: int = 1
    # Trials' workdirs: SWEEP_DIR/trial_N unless a root every trial's hosts
    # share (a gs:// URL for TPU VM trials); their logs stay in SWEEP_DIR.
    trial_root: str = ""
    launcher: list[str] = dataclasses.field(default_factory=list)
    heartbeat_s: int = 30
    grace_s: int = 120
    max_retry: int = 3
    poll_s: float = 0.5
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: list = dataclasses.field(default_factory=list)  # a SweepError, if any

    def study(self, worker: int) -> optuna.Study:
        storage = sweep.make_storage(
            self.storage_url,
            heartbeat_s=self.heartbeat_s,
            grace_s=self.grace_s,
            max_retry=self.max_retry,
        )
        # Per process and thread; GEN_JAX_SWEEP_WORKER (a Slurm array task's
        # index, launch/slurm_sweep.sbatch) apart hosts whose pids collide.
        host = int(os.environ.get("GEN_JAX_SWEEP_WORKER", "0"))
        offset = (host * 1_000_003 + os.getpid() * 1000 + worker) % 2**31
        return optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            load_if_exists=True,
            directions=list(self.space.directions),
            sampler=sweep.make_sampler(self.space.sampler, offset),
            pruner=sweep.make_pruner(self.space.pruner, self._eval_every()),
        )

    def _eval_every(self) -> int:
        every = []
        for metric in self.space.eval_metrics:
            name = metric.split("/")[1]
            if name not in self.config.evals:
                raise sweep.SweepError(
                    f"metric {metric!r} names no evaluator of the config "
                    f"(config.evals has {', '.join(self.config.evals)})"
                )
            every.append(self.config.evals[name].every_steps)
        return every[0]

    def check(self) -> tuple[list[str], dict]:
        """What can fail before a trial runs: the space's keys (every branch
        drawn), its sampler and pruner. The keys, and the pruner resolved."""
        keys, every = sweep.check_space(self.space, self.config), self._eval_every()
        sweep.make_sampler(self.space.sampler, 0)
        sweep.make_pruner(self.space.pruner, every)
        return keys, sweep.pruner_spec(self.space.pruner, every)

    def run(self) -> None:
        """`workers` threads, each running trials until the study or this
        process has its count; re-raises a SweepError (exit 2)."""
        self.check()  # a bad key: exit 2 before any trial
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        # The storage's tables and the study, created once: under the lock, so
        # workers starting together do not race to create them.
        with sweep.sweep_lock(self.storage_url, self.sweep_dir, self.study_name):
            self.study(0).set_metric_names(list(self.space.metrics))
        self._left = self.n_trials or None
        self._count = threading.Lock()
        threads = [
            threading.Thread(target=self._worker, args=(i,), name=f"sweep-{i}")
            for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.error:
            raise self.error[0]

    def _take_one(self) -> bool:
        with self._count:
            if self._left is None:
                return True
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def _worker(self, index: int) -> None:
        study = self.study(index)
        while not self.stop.is_set() and self._take_one():
            held = _Held(
                sweep.sweep_lock(self.storage_url, self.sweep_dir, self.study_name)
            )
            try:
                # Trials whose worker died: FAIL now, their retries WAITING
                # (part of the study already: they run whatever the count).
                optuna.storages.fail_stale_trials(study)
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if (
                    self.max_trials
                    and started(study) >= self.max_trials
                    and not waiting
                ):
                    return
                study.optimize(
                    lambda trial, held=held: self._objective(trial, held.release),
                    n_trials=1,
                    catch=(sweep.TrialFailed,),
                )
            except sweep.SweepError as e:
                self.error.append(e)
                self.stop.set()
            finally:
                held.release()

    def _objective(self, trial: optuna.Trial, release) -> float:
        release()  # the trial exists: another worker may count it now
        frozen = trial.study.trials[trial.number]
        root = sweep.root_number(frozen)
        overrides = self.space.suggest(trial)
        sweep.check_overrides(self.config, overrides)
        workdir = f"{self.trial_root or self.sweep_dir}/trial_{root}"
        train = [
            "train",
            f"--config={self.config_spec}",
            f"--workdir={workdir}",
            *self.base_overrides,
            *(f"--config.{k}={sweep.flag_value(v)}" for k, v in overrides.items()),
        ]
        # A launcher (launch/local.sh, launch/tpu_vm.sh run) takes gen_jax.main's
        # arguments and forwards the SIGTERM that prunes.
        command = (self.launcher or [sys.executable, "-m", "gen_jax.main"]) + train
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("command", shlex.join(["gen-jax", *train]))
        if self.launcher:
            trial.set_user_attr("launcher", shlex.join(self.launcher))
        trial.set_user_attr("workdir", workdir)
        trial.set_user_attr("commit", provenance.commit(short=False) or "unknown")
        log_dir = self.sweep_dir / f"trial_{root}"  # local, beside the study
        values = Watch(self, trial, workdir, log_dir, command).result()
        out = [
            float(sweep.config_value(self.config, m, overrides))
            if m.startswith("config.")
            else values[m]
            for m in self.space.metrics
        ]
        return out if self.space.multi else out[0]


def started(study: optuna.Study) -> int:
    """The study's trials that are not retries and have started (enqueued
    ones still waiting do not count)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.WAITING and sweep.root_number(t) == t.number
    )


class _Held:
    """The sweep's lock, taken now and released once, from whichever of the
    objective (once its trial exists) or the worker gets there first."""

    def __init__(self, lock):
        self.lock, self.held = lock, True
        lock.__enter__()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.__exit__(None, None, None)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _die_with_parent() -> None:
    """The trial gets SIGTERM (saves, exits 0) if its worker dies: one
    prctl(PR_SET_PDEATHSIG) system call between fork and exec."""
    _PRCTL(1, signal.SIGTERM)


class Watch:
    """One trial's run: started, its evaluations reported, pruned by SIGTERM."""

    def __init__(self, owner: Sweep, trial: optuna.Trial, workdir, log_dir, command):
        self.owner, self.trial, self.workdir = owner, trial, epath.Path(workdir)
        self.log = pathlib.Path(log_dir) / "train.log"
        self.command = command
        self.offset, self.last = 0, {}  # metric -> (step, its last value)
        self.step = 0  # the last step the run logged
        # A resumed run drops the rows after its checkpoint and logs those
        # steps again (the same values); Optuna takes one value per step.
        self.reported: set[int] = set()

    def _read(self) -> None:
        path = self.workdir / "metrics.jsonl"
        if not path.exists():
            return
        with path.open() as f:
            if f.seek(0, os.SEEK_END) < self.offset:
                # The run resumed and dropped the rows after its checkpoint.
                self.offset, self.step = 0, 0
            f.seek(self.offset)
            chunk = f.read()
        lines = chunk.split("\n")
        self.offset += len(chunk) - len(lines[-1])  # a partial last line: later
        space = self.owner.space
        for line in lines[:-1]:
            row = json.loads(line)
            self.step = max(self.step, row.get("step", 0))
            for metric in space.eval_metrics:
                if row.get(metric) is not None:
                    self.last[metric] = (row["step"], float(row[metric]))
                    if not space.multi and row["step"] not in self.reported:
                        # Optuna reports single objectives only
                        self.trial.report(float(row[metric]), row["step"])
                        self.reported.add(row["step"])

    def result(self) -> dict[str, float]:
        """Runs the trial to its end; the last value of each eval metric."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # A launcher runs `$PYTHON -m gen_jax.main` and logs per process in $LOG_DIR.
        env = dict(os.environ, PYTHON=sys.executable, LOG_DIR=str(self.log.parent))
        with open(self.log, "a") as log:
            proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one system call
            )
            while proc.poll() is None:
                self._read()
                if (
                    self.last
                    and not self.owner.space.multi
                    and self.trial.should_prune()
                ):
                    step = max(s for s, _ in self.last.values())
                    proc.send_signal(signal.SIGTERM)  # saves, exits 0
                    self.trial.set_user_attr("exit_code", proc.wait())
                    self._read()  # what it logged until it stopped
                    self.trial.set_user_attr("steps", self.step)
                    raise optuna.TrialPruned(f"pruned at step {step}")
                if self.owner.stop.is_set():
                    proc.send_signal(signal.SIGTERM)
                time.sleep(self.owner.poll_s)
            self._read()
        self.trial.set_user_attr("exit_code", proc.returncode)
        self.trial.set_user_attr("steps", self.step)
        return self._outcome(proc.returncode)

    def _outcome(self, code: int) -> dict[str, float]:
        tail = self.log.read_text().strip().splitlines()[-1:]
        line = tail[0] if tail else f"exit {code}"
        if code == 2:  # a config error: every trial would hit it
            raise sweep.SweepError(f"trial {self.trial.number}: {line}")
        if code != 0:
            raise sweep.TrialFailed(f"trial {self.trial.number} exited {code}: {line}")
        missing = [m for m in self.owner.space.eval_metrics if m not in self.last]
        if missing:
            raise sweep.TrialFailed(
                f"trial {self.trial.number} logged no {', '.join(missing)}"
            )
        return {m: value for m, (_, value) in self.last.items()}
