import importlib
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import build, checkpoint, data, families, metrics, optim, sharding, train
from gen_jax.families import Family
from tests import helpers


def _assert_trees_equal(a, b):
    # Paths, not treedefs: the static optimizer differs between two setups.
    a, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(a))
    b, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(b))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _restore(config, workdir, mesh=None):
    """(state, iterator state) of the newest checkpoint in `workdir`."""
    s = build.setup(config, mesh)
    it = data.make_train(config.data, batch_size=config.train.batch_size, mesh=s.mesh)
    manager = checkpoint.make_manager(workdir, keep=10)
    state = checkpoint.restore_latest(manager, s.abstract_state, it.iterator)
    manager.close()
    return state, it.iterator.get_state()


def test_round_trip_is_bitwise(smoke_config, tmp_path):
    s = build.setup(smoke_config)
    state = s.init(s.init_key)
    it = data.make_train(smoke_config.data, batch_size=16, mesh=s.mesh)
    state, _ = s.train_step(state, next(it), s.step_key)  # non-trivial opt_state
    manager = checkpoint.make_manager(str(tmp_path), keep=2)
    checkpoint.save(manager, state, it.iterator)
    manager.wait_until_finished()
    manager.close()
    restored, it_state = _restore(smoke_config, str(tmp_path))
    _assert_trees_equal(restored, state)
    assert it_state == it.iterator.get_state()


def test_a_checkpoint_from_before_the_held_optimizer_values_resumes(
    smoke_config, tmp_path
):
    """States saved before the optimizer held its values (each role's clip +
    AdamW state alone) restore: the count from the inner state, the values
    from the config, equal to the state as it is now saved."""
    s = build.setup(smoke_config)
    it = data.make_train(smoke_config.data, batch_size=16, mesh=s.mesh)
    state, _ = s.train_step(s.init(s.init_key), next(it), s.step_key)
    old = state.replace(opt_state=optim.before_values(state.opt_state))
    manager = checkpoint.make_manager(str(tmp_path), keep=2)
    checkpoint.save(manager, old, it.iterator)
    manager.wait_until_finished()
    manager.close()
    restored, _ = _restore(smoke_config, str(tmp_path))
    held = optim.with_config_values(restored.opt_state, smoke_config)
    _assert_trees_equal(restored.replace(opt_state=held), state)


@pytest.mark.parametrize(
    "name", ["vae_digits", "ddpm_digits", "lm_pydoc", "gan_digits", "sft_pydoc"]
)
def test_exact_resume_matches_uninterrupted_run(name, trained, tmp_path):
    """The family's shared smoke run (6 steps, saved at 3 and 6; the GAN's with
    two roles, every-2-steps phases and spectral-norm state) is the
    uninterrupted run; sft_pydoc's trains LoRA adapters on packed SFT rows.
    A copy without its step-6 checkpoint, as if killed right
    after the step-3 save, resumes and must end bitwise where it ended."""
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    assert (config.train.num_steps, config.train.ckpt_every_steps) == (6, 3)
    reference = trained(name)
    resumed = trained.copy(name, tmp_path / "resumed")
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
    config.train.log_every_steps = 3  # one window, (3, 6], after the resume
    config.evals = {}  # evaluators read the state, never change it
    final = train.run(config, resumed)
    want, want_data = _restore(config, reference)
    got, got_data = _restore(config, resumed)
    _assert_trees_equal(got, want)
    _assert_trees_equal(final, want)
    assert got_data == want_data
    _assert_logs_read_as_one_run(reference, resumed)
    if name == "gan_digits":
        _assert_window_averages_its_updates(reference, resumed)


def _assert_logs_read_as_one_run(reference: str, resumed: str) -> None:
    """The copy's logs held the reference's steps 4 and 6, which the resumed
    run redid: metrics.jsonl keeps the rows up to step 3 and then the resumed
    run's (its one window, at 6); TensorBoard's reader, told of the restart,
    drops the earlier file's events from step 4 on."""
    from tensorboard.backend.event_processing import event_accumulator

    before = [r for r in helpers.read_metrics(reference) if r["step"] <= 3]
    rows = helpers.read_metrics(resumed)
    assert rows[: len(before)] == before
    assert [r["step"] for r in rows[len(before) :]] == [6]
    events = event_accumulator.EventAccumulator(resumed)
    events.Reload()
    assert [e.step for e in events.Scalars("steps_per_sec")] == [2, 6]


def _assert_window_averages_its_updates(reference: str, resumed: str) -> None:
    """The resumed run's window (3, 6] (3 is unaligned with the every-2-steps
    generator and lazy R1 phases) holds the mean of exactly its updates, at
    steps 4 and 6; the reference logs every 2 steps, one update per window."""
    rows = helpers.read_metrics(reference)
    per_update = {r["step"]: r for r in rows if "gen/loss" in r}
    window = [r for r in helpers.read_metrics(resumed) if "gen/loss" in r][-1]
    assert window["step"] == 6 and sorted(per_update) == [2, 4, 6]
    for key in ("gen/loss", "gen/grad_norm", "disc/r1/loss", "disc/r1/r1"):
        want = (per_update[4][key] + per_update[6][key]) / 2
        np.testing.assert_allclose(window[key], want, rtol=1e-5, err_msg=key)
    assert not any(k.endswith("/updates") for k in window)  # counts stay internal


def test_damaged_latest_checkpoint_falls_back_to_previous(
    trained, smoke_config, tmp_path
):
    workdir = trained.copy("vae_digits", tmp_path / "run")
    state_dir = os.path.join(workdir, "checkpoints", "6", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"not a checkpoint")
    restored, _ = _restore(smoke_config, workdir)
    assert int(restored.step) == 3
    assert os.listdir(os.path.join(workdir, "checkpoints_damaged")) == ["6.0"]
    # The run resumes from step 3 and can save step 6 again.
    smoke_config.evals = {}
    assert int(train.run(smoke_config, workdir).step) == 6


@pytest.mark.slow
def test_restore_onto_a_different_device_count(smoke_config, tmp_path):
    smoke_config.mesh.fsdp = 2
    smoke_config.mesh.fsdp_min_size = 256
    saved = train.run(smoke_config, str(tmp_path))
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(saved.params))
    smoke_config.mesh.fsdp = 1
    mesh1 = sharding.make_mesh(smoke_config.mesh, jax.devices()[:1])
    restored, _ = _restore(smoke_config, str(tmp_path), mesh1)
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(restored))
    _assert_trees_equal(restored, saved)


def _nan_family(config) -> Family:
    """Adam moves w up by ~lr per step; log(2.5 - w) is NaN once w passes 2.5."""

    def loss(params, batch, key):
        return jnp.log(2.5 - params["model"]["w"]), {}

    return Family(
        init=lambda key, batch: {"model": {"w": jnp.zeros(())}},
        losses={"model": loss},
        sample=lambda p, key, n: jnp.zeros((n, 1, 1, 1)),
    )


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(
    smoke_config, tmp_path, monkeypatch
):
    monkeypatch.setattr(families, "make", _nan_family)
    smoke_config.optim.model.update(
        lr=1.0, warmup_steps=0, final_lr_ratio=1.0, clip_norm=0.0
    )
    smoke_config.train.update(num_steps=10, ckpt_every_steps=2, log_every_steps=1)
    smoke_config.evals = {}
    with pytest.raises(metrics.NonFiniteLossError, match="at step 4"):
        train.run(smoke_config, str(tmp_path))
    manager = checkpoint.make_manager(str(tmp_path), keep=10)
    assert manager.all_steps() == [2]
    manager.close()
    restored, _ = _restore(smoke_config, str(tmp_path))
    assert np.isfinite(float(restored.params["model"]["w"]))


@pytest.mark.slow
def test_sigterm_saves_exits_cleanly_and_resumes_exactly(trained, tmp_path):
    """SIGTERM to a single process, before its train step has compiled: it saves
    at the step it reached and exits 0; restarted, it ends bitwise where the
    shared uninterrupted smoke run of the same config ended."""
    args = ["--config=configs/vae_digits.py:smoke", "--config.train.log_every_steps=1"]
    workdir = str(tmp_path / "run")
    proc = helpers.start_cli(*args, f"--workdir={workdir}")
    # config.json is written before the train step compiles; the handler is
    # installed before anything compiles.
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(workdir, "config.json")):
        assert proc.poll() is None and time.time() < deadline, "the run never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    assert "preempted: saved step" in stderr
    stopped = helpers.read_metrics(workdir)[-1]["step"]
    manager = checkpoint.make_manager(workdir, keep=10)
    assert manager.latest_step() == stopped < 6
    manager.close()

    resumed = helpers.cli(*args, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    config = importlib.import_module("configs.vae_digits").get_config("smoke")
    want, _ = _restore(config, trained("vae_digits"))
    got, _ = _restore(config, workdir)
    assert int(got.step) == 6
    _assert_trees_equal(got, want)


def test_init_from_loads_params_only(trained, smoke_config, tmp_path):
    source = trained("vae_digits")
    smoke_config.train.update(init_from=source, num_steps=1)
    smoke_config.optim.model.lr = 0.0  # so the params stay as loaded
    smoke_config.evals = {}
    tuned = train.run(smoke_config, str(tmp_path / "tuned"))
    assert int(tuned.step) == 1
    _assert_trees_equal(tuned.params, checkpoint.open_run(source, ema=False).params)


def test_open_run_restores_params_without_the_optimizer_state(trained):
    run = checkpoint.open_run(trained("gan_digits"))
    assert run.step == 6 and run.config.family == "gan"
    assert set(run.params) >= {"disc", "gen"}
    raw = checkpoint.open_run(trained("gan_digits"), ema=False, step=3)
    assert raw.step == 3
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(raw.params))
    )
    with pytest.raises(FileNotFoundError, match="no checkpoint step 5"):
        checkpoint.open_run(trained("gan_digits"), step=5)


def test_checkpoints_dir_keeps_cloud_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(checkpoint.checkpoints_dir("gs://bucket/run")) == (
        "gs://bucket/run/checkpoints"
    )
    assert str(checkpoint.checkpoints_dir("run")) == str(tmp_path / "run/checkpoints")
