"""TrainState: step, and params / optimizer state / EMA keyed by role."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: dict[str, PyTree]  # roles and any non-trainable state entries
    opt_state: dict[str, optax.OptState]  # one per role with a loss
    ema_params: dict[str, PyTree]  # a copy, never an alias; frozen entries absent
    tx: dict[str, optax.GradientTransformation] = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        params: dict[str, PyTree],
        tx: dict[str, optax.GradientTransformation],
        frozen: tuple[str, ...] = (),
    ) -> "TrainState":
        """A fresh state at step 0; the EMA starts as a copy (donation forbids
        aliases) of every entry but the `frozen` ones (never updated)."""
        tracked = {k: v for k, v in params.items() if k not in frozen}
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state={role: t.init(params[role]) for role, t in tx.items()},
            ema_params=jax.tree.map(jnp.copy, tracked),
            tx=tx,
        )

    @property
    def sampling_params(self) -> dict[str, PyTree]:
        """The EMA, with the frozen entries it does not copy: what samplers use."""
        return {**self.params, **self.ema_params}

    def apply_gradients(self, role: str, grads: PyTree) -> "TrainState":
        """One optimizer update of `role`; other roles are untouched."""
        updates, opt_state = self.tx[role].update(
            grads, self.opt_state[role], self.params[role]
        )
        params = optax.apply_updates(self.params[role], updates)
        return self.replace(
            params={**self.params, role: params},
            opt_state={**self.opt_state, role: opt_state},
        )
