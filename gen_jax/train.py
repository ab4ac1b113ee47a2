"""The only training loop: build, shard, resume, step, log, evaluate, save.

A run: family and mesh from the config -> the state born sharded (eval_shape
-> shardings -> jit init) or restored from the workdir, with what the family
loads at step 0 -> the jitted shared train step, with metrics fetched one step
late -> evaluators and async checkpoints at their intervals -> a final save.
SIGTERM saves and exits.

From clu: the log window's averages (`clu.metrics.Average`, in
metrics.LogWindow) and the parameter table printed at the start
(`clu.parameter_overview`). Not from clu: the
TensorBoard writer (metrics.Writer) and the progress line (`_Progress`), since
clu's metric writers and periodic actions import TensorFlow, which a run
otherwise never loads (tests/test_tools.py checks that it stays out).
"""

import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from clu import parameter_overview
from etils import epath

from gen_jax import build, checkpoint, data, families, metrics, optim, pytree
from gen_jax.train_state import TrainState


class _Preemption:
    """Whether to save and stop: SIGTERM, the preemption notice of spot VMs and
    TPU slices. Multi-process runs ask JAX's preemption sync (every process
    stops at the same step) and leave the signal to the handler JAX's
    distributed runtime installed; a single process catches it in Python."""

    def __init__(self):
        self.flag = False
        self.synced = jax.process_count() > 1
        self.old_handler = None
        if not self.synced:  # early: a SIGTERM while compiling still saves
            self.old_handler = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        logging.warning("SIGTERM: saving a checkpoint and stopping")
        self.flag = True

    def reached(self, manager, step: int) -> bool:
        """Called after every step, by every process."""
        if self.synced:
            self.flag = self.flag or manager.reached_preemption(step)
        return self.flag

    def close(self) -> None:
        if self.old_handler is not None:
            signal.signal(signal.SIGTERM, self.old_handler)


class _Progress:
    """The note that ends each progress line: the window's steps/s (training
    time only, the value metrics.jsonl logs), how far the run is, its ETA from
    the wall time per step since the first one (evals and saves included),
    then the elapsed time and its share in evals: the numbers and format of
    clu's ReportProgress (see the module docstring for why not clu's own)."""

    def __init__(self, step: int, total: int):
        self.total, self.first = total, (step, time.perf_counter())
        self.eval_secs = 0.0

    def note(self, step: int, steps_per_sec: float) -> str:
        now = time.perf_counter()
        per_step = (now - self.first[1]) / max(step - self.first[0], 1)
        elapsed = now - self.first[1]
        return (
            f"{steps_per_sec:.1f} steps/s, {100 * step / self.total:.1f}% "
            f"({step}/{self.total}), "
            f"ETA: {per_step * (self.total - step) / 60:.0f}m "
            f"({elapsed / 60:.0f}m : {100 * self.eval_secs / max(elapsed, 1e-9):.1f}% eval)"
        )


def run(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains `config` in `workdir` (resuming if it holds checkpoints): a local
    directory or a Cloud Storage URL (gs://bucket/run)."""
    path = epath.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir={workdir} is a file; give a directory")
    path.mkdir(parents=True, exist_ok=True)
    # Sections repeated from the runs this one reads (a text encoder's model
    # and tokenizer), so any such run fits; recorded in config.json.
    changed = families.prepare(config, checkpoint.load_config)
    if changed:
        logging.info("taken from the runs this one reads: %s", ", ".join(changed))
    preemption = _Preemption()
    try:
        return _run(config, workdir, preemption)
    finally:
        preemption.close()


def _run(config, workdir, preemption) -> TrainState:
    run_setup = build.setup(config)
    mesh = run_setup.mesh
    train_iter = data.make_train(
        config.data, batch_size=config.train.batch_size, mesh=mesh
    )
    evaluators = build.make_evaluators(
        config, run_setup.family, mesh, run_setup.eval_key, workdir
    )
    manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
    try:
        state = checkpoint.restore_latest(
            manager, run_setup.abstract_state, train_iter.iterator
        )
        if state is not None:  # the optimizer's values as config.json says
            state = state.replace(
                opt_state=optim.with_config_values(state.opt_state, config)
            )
        else:
            state = run_setup.init(run_setup.init_key)
            if config.train.init_from:
                state = _init_from(config.train.init_from, state, run_setup)
            for load in run_setup.family.loads:
                state = _load(config, load, state, run_setup)
        if jax.process_index() == 0:
            table = parameter_overview.get_parameter_overview(
                run_setup.abstract_state.params, include_stats=False
            )
            logging.info("params (frozen entries included):\n%s", table)
        # Every start: a resumed run with changed overrides leaves no stale config.
        checkpoint.write_config(config, workdir)
        writer = metrics.Writer(workdir, start_step=int(state.step))
        try:
            return _loop(
                config,
                run_setup,
                state,
                train_iter,
                evaluators,
                manager,
                writer,
                preemption,
            )
        finally:
            writer.close()
    finally:
        manager.wait_until_finished()  # an async save must land before we exit
        manager.close()


def _init_from(path: str, state: TrainState, run_setup) -> TrainState:
    """The state with `path`'s params: the whole model (and its EMA), or the
    entry the family names (`Family.init_from`: LoRA's frozen base)."""
    abstract, entry = run_setup.abstract_state.params, run_setup.family.init_from
    if entry:
        params, _ = checkpoint.load_params(path, abstract[entry])
        return state.replace(params={**state.params, entry: params})
    params, _ = checkpoint.load_params(path, abstract)
    return state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))


def _load(config, load, state: TrainState, run_setup) -> TrainState:
    """Fills the frozen entry `load` declares from its run (`Family.loads`),
    recording what it measured (latent diffusion's scale) in the config."""
    if load.entry not in run_setup.family.frozen:  # a declaration bug, not the user's
        raise ValueError(f"Family.loads fills {load.entry!r}, which is not frozen")
    abstract = run_setup.abstract_state.params[load.entry]
    try:  # as that run is deployed: EMA params, a LoRA fine-tune merged
        other = checkpoint.open_run(load.path, mesh=run_setup.mesh)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{load.source}={load.path!r}: {e}; {load.hint}") from e
    batches = []
    if load.batches:
        it = data.make_train(
            config.data, batch_size=config.train.batch_size, mesh=run_setup.mesh
        )
        batches = [next(it) for _ in range(load.batches)]
    entry, records = load.finish(other.params, batches)
    mismatch = pytree.mismatch(entry, abstract)
    if mismatch:
        raise ValueError(
            f"{load.source}={load.path!r} does not fit this run's {load.entry!r} "
            f"entry ({mismatch}): this config must repeat that run's model section"
        )
    entry = jax.device_put(entry, jax.tree.map(lambda a: a.sharding, abstract))
    logging.info(
        "%s: loaded %s (step %d); %s", load.entry, load.path, other.step, records
    )
    config.update_from_flattened_dict(records)  # recorded in config.json
    return state.replace(params={**state.params, load.entry: entry})


def _loop(
    config, run_setup, state, train_iter, evaluators, manager, writer, preemption
):
    """Steps from `state.step` to `train.num_steps`; returns the last state."""
    cfg = config.train
    start = int(jax.device_get(state.step))
    buffer = metrics.LogWindow()
    peak = (
        metrics.peak_flops(cfg.peak_flops_per_device)[0]
        if ("flops" in run_setup.family.per_example)
        else 0.0
    )
    if cfg.eval_at_start and start == 0:  # the starting point (a fine-tune's base)
        for name, (_, run_eval) in evaluators.items():
            writer.write_eval(0, name, run_eval(state))
    last_log, last_time = start, time.perf_counter()
    for s in range(start, cfg.num_steps):
        batch = next(train_iter)
        state, step_metrics = run_setup.train_step(state, batch, run_setup.step_key)
        done = s + 1
        buffer.push(done, step_metrics)
        if s == start:  # keep compilation out of the first steps/s reading
            buffer.flush()
            last_log, last_time = done, time.perf_counter()
            progress = _Progress(done, cfg.num_steps)
        stop = preemption.reached(manager, done)
        if done % cfg.log_every_steps == 0 or done == cfg.num_steps:
            scalars, note = buffer.mean(), ""
            if done > last_log:
                steps_per_sec = (done - last_log) / (time.perf_counter() - last_time)
                scalars |= _rates(
                    steps_per_sec, cfg.batch_size, run_setup.family.per_example, peak
                )
                note = progress.note(done, steps_per_sec)
            writer.write_scalars(done, scalars)
            _log_progress(done, cfg.num_steps, scalars, note)
            last_log, last_time = done, time.perf_counter()
        eval_start = time.perf_counter()
        for name, (every, run_eval) in evaluators.items():
            if done % every == 0 or done == cfg.num_steps:
                writer.write_eval(done, name, run_eval(state))
        eval_secs = time.perf_counter() - eval_start
        last_time += eval_secs  # rates count training only
        progress.eval_secs += eval_secs
        if done % cfg.ckpt_every_steps == 0 or done == cfg.num_steps or stop:
            buffer.flush()  # never save a state whose step went non-finite
            checkpoint.save(manager, state, train_iter.iterator)
        if stop:
            logging.warning("preempted: saved step %d and stopping", done)
            break
    return state


def _log_progress(step: int, total: int, scalars: dict, note: str) -> None:
    """One line: the step, the losses, and the rate and ETA of `_Progress`."""
    losses = " ".join(f"{k} {v:.4g}" for k, v in scalars.items() if k.endswith("/loss"))
    logging.info("step %d/%d  %s  |  %s", step, total, losses, note or "-")


def _rates(steps_per_sec, batch_size, per_example, peak) -> dict[str, float]:
    """steps/s, examples/s, <count>/s for the family's per-example counts, MFU."""
    out = {
        "steps_per_sec": steps_per_sec,
        "examples_per_sec": steps_per_sec * batch_size,
    }
    for name, count in per_example.items():
        out[f"{name}_per_sec"] = count * out["examples_per_sec"]
    if peak:
        out["mfu"] = out["flops_per_sec"] / peak
    return out
