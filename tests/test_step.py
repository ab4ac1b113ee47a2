import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from gen_jax import build, data, optim, sharding, step
from gen_jax.families import Family
from gen_jax.train_state import TrainState


def _two_role_family() -> Family:
    """A toy adversarial pair: "disc" fits the data mean, "gen" chases the disc.

    It also keeps a non-trainable counter beside the roles, updated through
    aux["new_state"], as spectral-norm vectors will be.
    """

    def init(key, batch):
        return {
            "disc": {"w": jnp.zeros(3)},
            "gen": {"w": jnp.ones(3)},
            "counter": jnp.zeros((), jnp.int32),
        }

    def disc_loss(params, batch, key):
        target = jnp.mean(batch["x"], axis=0)
        loss = jnp.sum((params["disc"]["w"] - target) ** 2)
        return loss, {"new_state": {"counter": params["counter"] + 1}}

    def gen_loss(params, batch, key):
        # Uses the disc params, already updated in this step; no gradient flows to them.
        return jnp.sum((params["gen"]["w"] - params["disc"]["w"]) ** 2), {}

    return Family(
        init=init,
        losses={"disc": disc_loss, "gen": gen_loss},
        sample=lambda params, key, n: jnp.zeros((n, 1, 1, 1)),
    )


def _sgd_state(family, batch, lr=0.1):
    params = family.init(jax.random.key(0), batch)
    return TrainState.create(params, {r: optax.sgd(lr) for r in family.losses})


def test_two_roles_update_in_order_and_only_their_own_params():
    family = _two_role_family()
    batch = {"x": jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])}
    state = _sgd_state(family, batch)
    new, metrics = jax.jit(
        lambda s, b, k: step.train_step(s, b, k, {"ema_decay": 0.5}, family=family)
    )(state, batch, jax.random.key(0))
    # disc: w - lr * 2 (w - mean) = 0 - 0.1 * 2 * (0 - 2) = 0.4
    np.testing.assert_allclose(new.params["disc"]["w"], [0.4] * 3, rtol=1e-6)
    # gen sees the *updated* disc: 1 - 0.1 * 2 * (1 - 0.4) = 0.88
    np.testing.assert_allclose(new.params["gen"]["w"], [0.88] * 3, rtol=1e-6)
    assert int(new.params["counter"]) == 1 and int(new.step) == 1
    # EMA decay at step 0 is min(0.5, 1/10) (warmup): 0 + 0.9 * (0.4 - 0) = 0.36.
    np.testing.assert_allclose(new.ema_params["disc"]["w"], [0.36] * 3, rtol=1e-6)
    assert set(metrics) == {"disc/loss", "disc/grad_norm", "gen/loss", "gen/grad_norm"}
    assert set(new.opt_state) == {"disc", "gen"}


def test_disc_update_leaves_gen_unchanged():
    family = _two_role_family()
    disc_only = Family(family.init, {"disc": family.losses["disc"]}, family.sample)
    batch = {"x": jnp.ones((2, 3))}
    state = _sgd_state(disc_only, batch)
    new, _ = step.train_step(
        state, batch, jax.random.key(0), {"ema_decay": 0.0}, family=disc_only
    )
    np.testing.assert_array_equal(new.params["gen"]["w"], state.params["gen"]["w"])
    assert not np.array_equal(new.params["disc"]["w"], state.params["disc"]["w"])


def test_two_role_family_trains_to_its_fixed_point():
    family = _two_role_family()
    batch = {"x": jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])}
    state = _sgd_state(family, batch, lr=0.2)
    fn = jax.jit(
        lambda s, b, k: step.train_step(s, b, k, {"ema_decay": 0.9}, family=family)
    )
    for _ in range(60):
        state, metrics = fn(state, batch, jax.random.key(0))
    np.testing.assert_allclose(state.params["gen"]["w"], [2.0] * 3, atol=1e-3)
    assert float(metrics["disc/loss"]) < 1e-6


def _run_steps(config, mesh, batches):
    s = build.setup(config, mesh)
    state = s.init(s.init_key)
    for b in batches:
        state, metrics = s.train_step(state, b, s.step_key)
    return jax.device_get(state), metrics


def test_sharded_and_single_device_steps_agree(smoke_config):
    smoke_config.mesh.fsdp = 2
    smoke_config.mesh.fsdp_min_size = 256  # so some of the tiny leaves get sharded
    mesh4 = sharding.make_mesh(smoke_config.mesh)
    s4 = build.setup(smoke_config, mesh4)
    sharded = [
        x
        for x in jax.tree.leaves(s4.state_shardings)
        if isinstance(x, NamedSharding) and "fsdp" in str(x.spec)
    ]
    assert sharded, "expected some fsdp-sharded leaves"
    smoke_config.mesh.fsdp = 1
    mesh1 = sharding.make_mesh(smoke_config.mesh, jax.devices()[:1])
    local = [
        next(iter(data.make_eval(smoke_config.data, batch_size=16, mesh=mesh1)))
        for _ in range(1)
    ]
    local = local * 3
    got4, m4 = _run_steps(
        smoke_config, mesh4, [data._to_global(b, mesh4) for b in local]
    )
    got1, m1 = _run_steps(
        smoke_config, mesh1, [data._to_global(b, mesh1) for b in local]
    )
    assert int(got4.step) == int(got1.step) == 3
    for a, b in zip(jax.tree.leaves(got4), jax.tree.leaves(got1)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m4["model/loss"], m1["model/loss"], rtol=1e-5)


def _step_program(config) -> str:
    """The train step's StableHLO for `config` (lowered, not compiled)."""
    s = build.setup(config)
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            (config.train.batch_size, *x.shape[1:]), x.dtype
        ),
        data.dummy_batch(config.data),
    )
    return s.train_step.lower(s.abstract_state, batch, s.step_key).as_text()


def test_optimizer_scalars_and_ema_decay_are_inputs_not_constants(smoke_config):
    """Runs that differ only in the learning rate, betas, weight decay, final
    ratio, clipping norm and EMA decay lower to one program (so a sweep's
    trials share the persistent compilation cache); the step count does not."""
    base = _step_program(smoke_config)
    smoke_config.optim.model.update(
        lr=3e-2, b1=0.8, b2=0.95, weight_decay=0.1, final_lr_ratio=0.5, clip_norm=3.0
    )
    smoke_config.train.ema_decay = 0.5
    assert _step_program(smoke_config) == base
    smoke_config.train.num_steps += 1  # the schedule's shape is static
    assert _step_program(smoke_config) != base


def test_the_held_values_follow_the_config_and_drive_the_update(smoke_config):
    """A restored state takes its optimizer values from the config (a resumed
    run with a changed rate trains at it), and the held rate scales the step."""
    tx = optim.make(smoke_config, ["model"])["model"]
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 1e-3)}
    initial = {"model": tx.init(params)}
    held = initial["model"].hyperparams["lr"]
    assert float(held) == np.float32(smoke_config.optim.model.lr)

    def second_update(lr):
        smoke_config.optim.model.lr = lr
        state = optim.with_config_values(initial, smoke_config)["model"]
        assert float(state.hyperparams["lr"]) == np.float32(lr)
        _, state = tx.update(grads, state, params)  # count 0: warmup's 0
        return tx.update(grads, state, params)[0]["w"]

    fast, slow = second_update(0.5), second_update(0.25)
    assert np.all(np.asarray(fast) < 0)
    np.testing.assert_allclose(fast, 2 * slow, rtol=1e-6)
