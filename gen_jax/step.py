"""The pure train and eval steps shared by every family (jitted only in train.py)."""

import functools

import jax
import jax.numpy as jnp
import optax

from gen_jax.families import Batch, Family, Metrics, Params
from gen_jax.train_state import TrainState


def train_step(
    state: TrainState, batch: Batch, key: jax.Array, *, family: Family, ema_decay: float
) -> tuple[TrainState, Metrics]:
    """Updates each role in `family.losses` order, then the EMA of all params."""
    # Keys never enter the state: a resumed run repeats the same randomness.
    key = jax.random.fold_in(key, state.step)
    metrics = {}
    for role, loss_fn in family.losses.items():  # unrolled while tracing
        key, subkey = jax.random.split(key)

        def role_loss(
            p, role=role, loss_fn=loss_fn, subkey=subkey, params=state.params
        ):
            return loss_fn({**params, role: p}, batch, subkey)

        (loss, aux), grads = jax.value_and_grad(role_loss, has_aux=True)(
            state.params[role]
        )
        state = state.apply_gradients(role, grads)
        if "new_state" in aux:  # non-trainable entries (e.g. spectral-norm vectors)
            aux = dict(aux)
            state = state.replace(params={**state.params, **aux.pop("new_state")})
        metrics[f"{role}/loss"] = loss
        metrics[f"{role}/grad_norm"] = optax.tree.norm(grads)
        metrics |= {f"{role}/{k}": v for k, v in aux.items()}
    # EMA warmup: with a fixed 0.999 the init would still weigh e^-1 after 1000
    # steps; (1 + n) / (10 + n) lets early EMAs follow the params closely.
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(
        functools.partial(_ema, decay=decay), state.ema_params, state.params
    )
    return state.replace(step=state.step + 1, ema_params=ema), metrics


def _ema(e: jax.Array, p: jax.Array, decay: float) -> jax.Array:
    if not jnp.issubdtype(p.dtype, jnp.inexact):  # counters etc.: track the latest
        return p
    return e + (1 - decay) * (p - e)


def eval_step(
    params: Params, batch: Batch, key: jax.Array, *, family: Family
) -> Metrics:
    """Every role's loss and metrics on one batch, without updates (or the
    family's own held-out metrics, when it defines them)."""
    if family.evaluate is not None:
        return family.evaluate(params, batch, key)
    metrics = {}
    for role, loss_fn in family.losses.items():
        key, subkey = jax.random.split(key)
        loss, aux = loss_fn(params, batch, subkey)
        aux = {k: v for k, v in aux.items() if k != "new_state"}
        metrics[f"{role}/loss"] = loss
        metrics |= {f"{role}/{k}": v for k, v in aux.items()}
    return metrics
