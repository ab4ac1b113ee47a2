"""orbax checkpoints of the train state together with the data iterator state.

Restarting with the same workdir resumes from the newest checkpoint that
restores; newer damaged ones are moved aside with a warning (never deleted).
The data state is saved as JSON, once: data.make_train gives every process the
same iterator position, so it restores under any process count (grain's own
handler writes one file per process and needs the same count back).
"""

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy

from gen_jax.train_state import TrainState


class CheckpointError(RuntimeError):
    """A workdir holds checkpoints, but none of them restores into this config."""


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """Async manager over `workdir/checkpoints` keeping the newest `keep` steps."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation_policy.LatestN(keep),
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        checkpoints_dir(workdir),
        item_names=("state", "data"),
        options=options,
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
    is none."""
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        )
        try:
            restored = manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types)
            logging.warning(
                "checkpoint at step %d does not restore (%s: %s); trying the "
                "previous one",
                step,
                type(e).__name__,
                _first_line(e),
            )
            failed.append((step, e))
            continue
        for bad, _ in failed:  # out of the way of the saves that will redo them
            _quarantine(manager, bad)
        if iterator is not None:
            iterator.set_state(restored.data)
        logging.info("resumed from step %d", step)
        return restored.state
    if failed:  # none restores: more likely a changed config than damage everywhere
        step, e = failed[0]
        raise CheckpointError(
            f"no checkpoint under {manager.directory} restores (step {step}: "
            f"{type(e).__name__}: {_first_line(e)}). If the config changed, use a new "
            "--workdir; if the files are damaged, move them away to start over."
        ) from e
    return None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:300]


def load_params(path: str, abstract_state: TrainState) -> dict:
    """Params of the newest checkpoint under `path` (a workdir or checkpoints dir)."""
    directory = checkpoints_dir(path)
    if not directory.is_dir():  # `path` is the checkpoints directory itself
        directory = directory.parent
    with ocp.CheckpointManager(
        directory,
        item_names=("state", "data"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    ) as m:
        step = m.latest_step()
        if step is None:
            raise FileNotFoundError(f"train.init_from={path!r} holds no checkpoint")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return m.restore(step, args=args).state.params
