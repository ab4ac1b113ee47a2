"""The pure train and eval steps shared by every family (jitted in build.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.families.family import (
    Batch,
    Family,
    Metrics,
    Params,
    heldout_metrics,
    role_of,
)
from gen_jax.train_state import TrainState


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array,
    values: dict[str, jax.Array],
    *,
    family: Family,
) -> tuple[TrainState, Metrics]:
    """Runs each phase of `family.losses` in order (those due this step), then
    the EMA of all params. `values` holds the scalars the step reads as inputs
    rather than constants (`values(config)`), as the optimizer's live in its
    state: runs that differ only in them share one compiled program."""
    # Keys never enter the state: a resumed run repeats the same randomness.
    key = jax.random.fold_in(key, state.step)
    metrics = {}
    for phase, loss_fn in family.losses.items():  # unrolled while tracing
        key, subkey = jax.random.split(key)
        update = functools.partial(
            _update, phase=phase, loss_fn=loss_fn, batch=batch, key=subkey
        )
        every = family.every.get(phase, 1)
        if every == 1:
            state, phase_metrics = update(state)
        else:
            state, phase_metrics = jax.lax.cond(
                state.step % every == every - 1,
                functools.partial(_counted, update, phase),
                functools.partial(_skipped, update, phase),
                state,
            )
        metrics |= phase_metrics
    # EMA warmup: with a fixed 0.999 the init would still weigh e^-1 after 1000
    # steps; (1 + n) / (10 + n) lets early EMAs follow the params closely.
    decay = jnp.minimum(values["ema_decay"], (1.0 + state.step) / (10.0 + state.step))
    ema = {  # the entries the EMA tracks (frozen ones it does not copy)
        k: jax.tree.map(functools.partial(_ema, decay=decay), e, state.params[k])
        for k, e in state.ema_params.items()
    }
    return state.replace(step=state.step + 1, ema_params=ema), metrics


def values(config) -> dict[str, np.float32]:
    """The train step's `values` argument for `config`."""
    return {"ema_decay": np.float32(config.train.ema_decay)}


def _update(state, *, phase, loss_fn, batch, key) -> tuple[TrainState, Metrics]:
    """One optimizer update of the phase's role, and the phase's metrics."""
    role = role_of(phase)

    def role_loss(p):
        return loss_fn({**state.params, role: p}, batch, key)

    (loss, aux), grads = jax.value_and_grad(role_loss, has_aux=True)(state.params[role])
    state = state.apply_gradients(role, grads)
    aux = dict(aux)
    if "new_state" in aux:  # non-trainable entries (e.g. spectral-norm vectors)
        state = state.replace(params={**state.params, **aux.pop("new_state")})
    metrics = {f"{phase}/loss": loss, f"{phase}/grad_norm": optax.tree.norm(grads)}
    return state, metrics | {f"{phase}/{k}": v for k, v in aux.items()}


# A phase run every n steps (under lax.cond, so skipped steps cost nothing)
# reports `<phase>/updates` = 1 on its steps and 0 between, its other metrics
# as they are (0 when skipped): the loop averages them over the updates only.
def _counted(update, phase, state):
    state, metrics = update(state)
    return state, metrics | {f"{phase}/updates": jnp.ones((), jnp.float32)}


def _skipped(update, phase, state):
    metrics = jax.eval_shape(update, state)[1]
    zeros = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), metrics)
    return state, zeros | {f"{phase}/updates": jnp.zeros((), jnp.float32)}


def _ema(e: jax.Array, p: jax.Array, decay: float) -> jax.Array:
    if not jnp.issubdtype(p.dtype, jnp.inexact):  # counters etc.: track the latest
        return p
    return optax.incremental_update(p, e, 1 - decay)


def eval_step(
    params: Params, batch: Batch, key: jax.Array, *, family: Family
) -> Metrics:
    """Every role's loss and metrics on one batch, without updates (or the
    family's own held-out metrics, when it defines them)."""
    return heldout_metrics(family, params, batch, key)
