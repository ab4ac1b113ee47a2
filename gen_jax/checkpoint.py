"""orbax checkpoints of the train state with the data iterator state, and
`open_run`: the config and params of a finished run, for the tools.

A restart resumes from the newest checkpoint that restores; newer damaged ones
are moved aside with a warning (never deleted). A checkpoint whose arrays do not
match the config is refused before any array is read. The data state is saved as
JSON, once: every process has the same iterator position, so it restores under
any process count (grain's own handler needs the same count back).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from orbax.checkpoint.checkpoint_managers import preservation_policy

from gen_jax import data, families, optim, pytree, sharding
from gen_jax.train_state import TrainState


class CheckpointError(RuntimeError):
    """A workdir holds checkpoints, but none of them restores into this config."""


# Replicated arrays whose per-replica slice would be under this size are
# written by one replica: orbax's default (0) splits every replicated array,
# compiling one slice program per shape and offset (48 for a smoke VAE on 4
# devices), for nothing on small arrays. Large arrays still save in parallel.
_MIN_REPLICA_SLICE_BYTES = 2**20


def _handlers() -> dict:
    from orbax.checkpoint._src.metadata import array_metadata_store  # no public path

    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
    }
    # After the handlers: building one re-registers orbax's default handler.
    # orbax warns on every override; this one is deliberate.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                array_metadata_store=array_metadata_store.Store(),  # orbax's default
                min_slice_bytes_for_replica_parallel=_MIN_REPLICA_SLICE_BYTES,
            ),
            override=True,
        )
    finally:
        logging.set_verbosity(verbosity)
    return handlers


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """Async manager over `workdir/checkpoints` keeping the newest `keep` steps."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation_policy.LatestN(keep),
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        checkpoints_dir(workdir), item_handlers=_handlers(), options=options
    )


def checkpoints_dir(workdir: str) -> epath.Path:
    """`workdir/checkpoints`, absolute: a local path or a URL (gs://...) as is."""
    path = epath.Path(workdir)
    if "://" not in str(workdir):  # os.path.abspath would mangle "gs://b" into a path
        path = path.absolute()
    return path / "checkpoints"


def save(manager: ocp.CheckpointManager, state: TrainState, iterator) -> None:
    """Starts an async save of `state` and the grain `iterator` at `state.step`."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(iterator.get_state())
    )
    manager.save(int(jax.device_get(state.step)), args=args, force=True)


def _quarantine(manager: ocp.CheckpointManager, step: int) -> None:
    """Moves a damaged step out of the manager's view so later saves can reuse it."""
    if jax.process_index() == 0:
        src = epath.Path(manager.directory) / str(step)
        dst = src.parent.parent / "checkpoints_damaged"
        dst.mkdir(parents=True, exist_ok=True)
        src.rename(dst / f"{step}.{len(list(dst.iterdir()))}")
    multihost_utils.sync_global_devices(f"quarantine_{step}")
    manager.reload()


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: TrainState, iterator
) -> TrainState | None:
    """The newest restorable state (placed as `abstract_state`'s shardings say),
    with `iterator` (if given) set to the matching data position; None if there
    is none. Raises CheckpointError if the checkpoints belong to another config."""
    want = pytree.flat_shapes(abstract_state)
    # As gen_jax saved states before the optimizer held its values.
    legacy = abstract_state.replace(
        opt_state=optim.before_values(abstract_state.opt_state)
    )
    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            saved = pytree.flat_shapes(manager.item_metadata(step)["state"].tree)
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types)
            damaged.append(_damaged(step, e))
            continue
        abstract, problem = abstract_state, pytree.flat_mismatch(saved, want)
        if problem and not pytree.flat_mismatch(saved, pytree.flat_shapes(legacy)):
            abstract, problem = legacy, None
        if problem:
            raise CheckpointError(
                f"the checkpoint at step {step} under {manager.directory} was "
                f"written by another config ({problem}); use a new --workdir, or "
                "the config it was trained with (its config.json)"
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
        )
        try:
            restored = manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001
            damaged.append(_damaged(step, e))
            continue
        for bad in damaged:  # out of the way of the saves that will redo them
            _quarantine(manager, bad)
        if iterator is not None:
            iterator.set_state(restored.data)
        logging.info("resumed from step %d", step)
        if abstract is legacy:
            held = optim.held(restored.state.opt_state, abstract_state.opt_state)
            return restored.state.replace(opt_state=held)
        return restored.state
    if damaged:
        raise CheckpointError(
            f"no checkpoint under {manager.directory} restores (steps {damaged} are "
            "damaged); move them away to start over"
        )
    return None


def _damaged(step: int, e: Exception) -> int:
    first = (str(e).splitlines() or [""])[0][:300]
    message = "checkpoint at step %d does not restore (%s: %s); trying the previous one"
    logging.warning(message, step, type(e).__name__, first)
    return step


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to its workdir (rewritten at every start)."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    return families.migrate(ml_collections.ConfigDict(json.loads(path.read_text())))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config as `workdir/config.json` (process 0)."""
    if jax.process_index() == 0:
        resolved = json.loads(config.to_json_best_effort())
        text = json.dumps(resolved, indent=2, sort_keys=True)
        (epath.Path(workdir) / "config.json").write_text(text)


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished (or running) run's config, one params tree and its step."""

    config: ml_collections.ConfigDict
    family: families.Family
    mesh: Mesh
    params: dict  # {role: params}, EMA unless opened with ema=False
    step: int


def abstract_of(init_fn, config, mesh: Mesh):
    """(ShapeDtypeStructs carrying their target shardings, the shardings) of
    `init_fn(key, dummy batch)`: a run's state (build.setup) or params."""
    boxed = jax.eval_shape(init_fn, jax.random.key(0), data.dummy_batch(config.data))
    return sharding.abstract_with_shardings(boxed, mesh, config.mesh.fsdp_min_size)


def open_run(
    workdir: str,
    *,
    ema: bool = True,
    step: int | None = None,
    config: ml_collections.ConfigDict | None = None,
    mesh: Mesh | None = None,
) -> Run:
    """The config and the params (EMA by default) of `workdir`'s newest checkpoint
    (or of `step`), restored without the optimizer state: a sampler, evaluator or
    exporter never holds the 3x larger train state. `config` replaces the run's
    config.json with a variant that keeps its params (another sampler, say).
    The family and params are those it is deployed as (`Family.deployed`)."""
    config = load_config(workdir) if config is None else config
    family = families.make(config)
    mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
    abstract, _ = abstract_of(family.init, config, mesh)
    params, step = load_params(workdir, abstract, ema=ema, step=step)
    if family.deployed is not None:
        family, params = family.deployed(params)
    return Run(config, family, mesh, params, step)


def load_params(
    path: str, abstract: dict, *, ema: bool = False, step: int | None = None
) -> tuple[dict, int]:
    """(params, step) of the newest checkpoint (or `step`) under `path` (a workdir
    or its checkpoints dir), placed as `abstract`'s shardings say. Reads only
    those arrays: never the optimizer state."""
    directory = checkpoints_dir(path)
    if not directory.is_dir():  # `path` is the checkpoints directory itself
        directory = epath.Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{path!r} holds no checkpoints directory")
    options = ocp.CheckpointManagerOptions(create=False)
    with ocp.CheckpointManager(
        directory, item_names=("state", "data"), options=options
    ) as manager:
        steps = manager.all_steps()
        step = max(steps, default=None) if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint step {step} under {directory}")
        meta = ocp.StandardCheckpointHandler().metadata(directory / str(step) / "state")
        saved = pytree.flat_shapes(meta.tree)
        item = _params_item(saved, abstract, ema)
        # A params-only read casts to the wanted dtype (a bfloat16 import read
        # into float32), so only the shapes must agree.
        want = {k: v[0] for k, v in pytree.flat_shapes(item).items()}
        have = {k: v[0] for k, v in saved.items() if k in want}
        if problem := pytree.flat_mismatch(have, want):
            raise CheckpointError(
                f"the checkpoint at {directory}/{step} does not fit this config "
                f"({problem})"
            )
        args = ocp.args.PyTreeRestore(
            item=item,
            restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True,
        )
        restored = manager.restore(step, args=ocp.args.Composite(state=args)).state
    return {**restored.get("params", {}), **restored.get("ema_params", {})}, step


def _params_item(saved: dict, abstract: dict, ema: bool) -> dict:
    """What a params-only read restores: `params`, or with `ema` the EMA of each
    entry the checkpoint has one for. Entries the EMA does not track (LoRA's
    frozen base) and checkpoints written without one (import-hf) read `params`."""
    if not ema:
        return {"params": abstract}
    tracked = {k.split("/")[1] for k in saved if k.startswith("ema_params/")}
    item = {"ema_params": {k: v for k, v in abstract.items() if k in tracked}}
    rest = {k: v for k, v in abstract.items() if k not in tracked}
    return item | ({"params": rest} if rest else {})


def save_params(workdir: str, params: dict, step: int = 0) -> None:
    """A params-only checkpoint (no optimizer state, no EMA, no data state), as
    import-hf writes: `open_run` and `train.init_from` read it; a run cannot
    resume from it."""
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(
        checkpoints_dir(workdir), item_names=("state", "data"), options=options
    ) as manager:
        state = {"step": jnp.asarray(step, jnp.int32), "params": params}
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
