"""Builds what a run needs from its config, touching neither data nor disk: the
family, the mesh, the sharded init, the jitted train step, and the evaluators
with the jitted functions they call (jit lives here for the loop's programs)."""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from gen_jax import checkpoint, data, evaluate, families, optim, sharding, step
from gen_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run (or a benchmark) needs."""

    family: families.Family
    mesh: Mesh
    abstract_state: TrainState  # ShapeDtypeStructs carrying their target shardings
    state_shardings: TrainState
    init: Callable[[jax.Array], TrainState]  # jitted: the state is born sharded
    # (state, batch, key) -> (state, metrics), jitted; donates the state.
    train_step: "BoundStep"
    init_key: jax.Array
    step_key: jax.Array
    eval_key: jax.Array


@dataclasses.dataclass(frozen=True)
class BoundStep:
    """The jitted `step.train_step` with its `values` bound: called and lowered
    as (state, batch, key)."""

    jitted: Callable  # (state, batch, key, values) -> (state, metrics)
    values: dict[str, jax.Array]

    def __call__(self, state, batch, key):
        return self.jitted(state, batch, key, self.values)

    def lower(self, state, batch, key):
        return self.jitted.lower(state, batch, key, self.values)


def setup(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Setup:
    """Family, mesh, sharded init and the jitted train step for `config`."""
    family = families.make(config)
    mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
    tx = optim.make(config, family.roles)

    def init_fn(key, batch):
        return TrainState.create(family.init(key, batch), tx, family.frozen)

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
    abstract, state_sh = checkpoint.abstract_of(init_fn, config, mesh)
    dummy = data.dummy_batch(config.data)
    train_step = BoundStep(
        jax.jit(
            functools.partial(step.train_step, family=family),
            in_shardings=(state_sh, sharding.batch_sharding(mesh), repl, repl),
            out_shardings=(state_sh, repl),
            donate_argnums=0,
        ),
        jax.device_put(step.values(config), repl),
    )
    return Setup(
        family,
        mesh,
        abstract,
        state_sh,
        jax.jit(lambda key: nn.unbox(init_fn(key, dummy)), out_shardings=state_sh),
        train_step,
        init_key,
        step_key,
        eval_key,
    )


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
