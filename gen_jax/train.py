"""The only training loop: build, shard, resume, step, log, evaluate, save.

A run: family and mesh from the config -> the state born sharded (eval_shape
-> shardings -> jit init) or restored from the workdir -> the jitted shared
train step, with metrics fetched one step late -> evaluators and async
checkpoints at their intervals -> a final save. SIGTERM saves and exits.
"""

import dataclasses
import functools
import json
import signal
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import Mesh

from gen_jax import checkpoint, data, evaluate, families, metrics, optim, sharding, step
from gen_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run (or a benchmark) needs, built without touching data or disk."""

    family: families.Family
    mesh: Mesh
    abstract_state: TrainState  # ShapeDtypeStructs carrying their target shardings
    state_shardings: TrainState
    init: Callable[[jax.Array], TrainState]  # jitted: the state is born sharded
    # jitted (state, batch, key) -> (state, metrics); donates the state.
    train_step: Callable
    init_key: jax.Array
    step_key: jax.Array
    eval_key: jax.Array


def setup(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Setup:
    """Family, mesh, sharded init and the jitted train step for `config`."""
    family = families.make(config)
    mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
    tx = optim.make(config, family.roles)
    dummy = data.dummy_batch(config.data)

    def init_fn(key):
        return TrainState.create(family.init(key, dummy), tx)

    repl = sharding.replicated(mesh)
    # Keys made by jit with a replicated output are global arrays: valid jit
    # inputs on every process of a multi-process mesh.
    init_key, step_key, eval_key = jax.jit(
        lambda: tuple(
            jax.random.fold_in(jax.random.key(config.seed), i) for i in range(3)
        ),
        out_shardings=repl,
    )()
    # Params may come boxed with logical axis names: shard by them, then unbox.
    boxed = jax.eval_shape(init_fn, init_key)
    state_sh = sharding.state_shardings(boxed, mesh, config.mesh.fsdp_min_size)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.unbox(boxed),
        state_sh,
    )
    train_step = jax.jit(
        functools.partial(
            step.train_step, family=family, ema_decay=config.train.ema_decay
        ),
        in_shardings=(state_sh, sharding.batch_sharding(mesh), repl),
        out_shardings=(state_sh, repl),
        donate_argnums=0,
    )
    return Setup(
        family,
        mesh,
        abstract,
        state_sh,
        jax.jit(lambda key: nn.unbox(init_fn(key)), out_shardings=state_sh),
        train_step,
        init_key,
        step_key,
        eval_key,
    )


class _MetricsBuffer:
    """Holds each step's device metrics until the next step is dispatched, then
    fetches them (so the device never idles), checks them for NaN and keeps
    them for averaging until the next log step."""

    def __init__(self):
        self.pending = None
        self.rows = []

    def push(self, step: int, device_metrics) -> None:
        self.flush()
        self.pending = (step, device_metrics)

    def flush(self) -> None:
        if self.pending is not None:
            step, device_metrics = self.pending
            self.pending = None
            values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
            metrics.check_finite(step, values)
            self.rows.append(values)

    def mean(self) -> dict[str, float]:
        self.flush()
        out = {k: float(np.mean([r[k] for r in self.rows])) for k in self.rows[0]}
        self.rows = []
        return out


def _sigterm_flag() -> tuple[list[bool], object]:
    """Catches SIGTERM (preemption) into a flag the loop polls; returns the old handler."""
    flag = [False]

    def handler(signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping")
        flag[0] = True

    return flag, signal.signal(signal.SIGTERM, handler)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        resolved = json.loads(config.to_json_best_effort())
        text = json.dumps(resolved, indent=2, sort_keys=True)
        (epath.Path(workdir) / "config.json").write_text(text)


def make_evaluators(config, family, mesh, key, workdir) -> dict:
    """{name: (every_steps, evaluator)} for `config.evals`, given the jitted
    functions they need."""
    repl = sharding.replicated(mesh)
    deps = {
        "workdir": workdir,
        "family": family,
        "data_cfg": config.data,
        "mesh": mesh,
        "key": key,
        "eval_step": jax.jit(
            functools.partial(step.eval_step, family=family), out_shardings=repl
        ),
        "sample_fn": (
            jax.jit(family.sample, static_argnums=2, out_shardings=repl)
            if family.sample
            else None
        ),
        "reconstruct_fn": (
            jax.jit(family.reconstruct, out_shardings=repl)
            if family.reconstruct
            else None
        ),
    }
    return {
        name: (cfg.every_steps, evaluate.make(name, cfg, **deps))
        for name, cfg in config.evals.items()
    }


def run(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains `config` in `workdir` (resuming if it holds checkpoints): a local
    directory or a Cloud Storage URL (gs://bucket/run)."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    stop, old_handler = _sigterm_flag()  # early: a SIGTERM while compiling still saves
    try:
        return _run(config, workdir, stop)
    finally:
        signal.signal(signal.SIGTERM, old_handler)


def _run(config, workdir, stop) -> TrainState:
    run_setup = setup(config)
    mesh = run_setup.mesh
    for phase, every in run_setup.family.every.items():
        if config.train.log_every_steps % every:
            raise ValueError(
                f"phase {phase!r} runs every {every} steps, which must divide "
                f"train.log_every_steps={config.train.log_every_steps} (its "
                "logged metrics are averages over whole intervals)"
            )
    train_iter = data.make_train(
        config.data, batch_size=config.train.batch_size, mesh=mesh
    )
    evaluators = make_evaluators(
        config, run_setup.family, mesh, run_setup.eval_key, workdir
    )
    manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
    state = checkpoint.restore_latest(
        manager, run_setup.abstract_state, train_iter.iterator
    )
    if state is None:
        state = run_setup.init(run_setup.init_key)
        if config.train.init_from:
            params = checkpoint.load_params(
                config.train.init_from, run_setup.abstract_state
            )
            state = state.replace(
                params=params, ema_params=jax.tree.map(jnp.copy, params)
            )
        _write_config(config, workdir)

    writer = metrics.Writer(workdir)
    try:
        state = _loop(
            config, run_setup, state, train_iter, evaluators, manager, writer, stop
        )
    finally:
        manager.wait_until_finished()  # an async save must land before we exit
        manager.close()
        writer.close()
    return state


def _loop(config, run_setup, state, train_iter, evaluators, manager, writer, stop):
    """Steps from `state.step` to `train.num_steps`; returns the last state."""
    cfg = config.train
    start = int(jax.device_get(state.step))
    buffer = _MetricsBuffer()
    peak = (
        metrics.peak_flops(cfg.peak_flops_per_device)[0]
        if ("flops" in run_setup.family.per_example)
        else 0.0
    )
    last_log, last_time = start, time.perf_counter()
    for s in range(start, cfg.num_steps):
        batch = next(train_iter)
        state, step_metrics = run_setup.train_step(state, batch, run_setup.step_key)
        done = s + 1
        buffer.push(done, step_metrics)
        if s == start:  # keep compilation out of the first steps/s reading
            buffer.flush()
            last_log, last_time = done, time.perf_counter()
        if jax.process_count() > 1:  # all hosts must agree on when to stop
            stop[0] = manager.reached_preemption(done)
        if done % cfg.log_every_steps == 0 or done == cfg.num_steps:
            scalars = buffer.mean()
            if done > last_log:
                steps_per_sec = (done - last_log) / (time.perf_counter() - last_time)
                scalars |= _rates(
                    steps_per_sec, cfg.batch_size, run_setup.family.per_example, peak
                )
            writer.write_scalars(done, scalars)
            logging.info(
                "step %d: %s", done, {k: f"{v:.4g}" for k, v in scalars.items()}
            )
            last_log, last_time = done, time.perf_counter()
        eval_start = time.perf_counter()
        for name, (every, run_eval) in evaluators.items():
            if done % every == 0 or done == cfg.num_steps:
                write_eval(writer, done, name, run_eval(state))
        last_time += time.perf_counter() - eval_start  # rates count training only
        if done % cfg.ckpt_every_steps == 0 or done == cfg.num_steps or stop[0]:
            buffer.flush()  # never save a state whose step went non-finite
            checkpoint.save(manager, state, train_iter.iterator)
        if stop[0]:
            logging.warning("stopped by SIGTERM at step %d after saving", done)
            break
    return state


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


def write_eval(writer, step: int, name: str, results: dict) -> None:
    """Scalars to TensorBoard + metrics.jsonl, images to TensorBoard + PNG."""
    scalars = {f"eval/{name}/{k}": v for k, v in results.items() if np.ndim(v) == 0}
    images = {f"eval/{name}/{k}": v for k, v in results.items() if np.ndim(v) == 3}
    if scalars:
        writer.write_scalars(step, scalars)
        logging.info("step %d: %s", step, {k: f"{v:.4g}" for k, v in scalars.items()})
    if images:
        writer.write_images(step, images)
