import importlib

import grain
import numpy as np
import pytest

from gen_jax import data, sharding


def test_digits_batches_are_global_sharded_images(smoke_config):
    mesh = sharding.make_mesh(smoke_config.mesh)
    batch = next(data.make_train(smoke_config.data, batch_size=16, mesh=mesh))
    assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert len(batch["image"].sharding.device_set) == 4
    x = np.asarray(batch["image"])
    assert x.min() >= -1 and x.max() <= 1 and x.min() < 0 < x.max()


def test_shuffling_is_deterministic_by_seed(smoke_config):
    mesh = sharding.make_mesh(smoke_config.mesh)

    def first(seed):
        smoke_config.data.shuffle_seed = seed
        return np.asarray(
            next(data.make_train(smoke_config.data, batch_size=16, mesh=mesh))["image"]
        )

    np.testing.assert_array_equal(first(0), first(0))
    assert not np.array_equal(first(0), first(1))


def _process_batches(cfg, batch_size: int, count: int, n: int) -> list[list[dict]]:
    """The first `n` local batches of each of `count` processes (data.local_batches
    is what make_train reads on process `index`)."""
    out = []
    for index in range(count):
        it = iter(
            data.local_batches(cfg, batch_size=batch_size, index=index, count=count)
        )
        out.append([next(it) for _ in range(n)])
    return out


@pytest.mark.parametrize("name", ["vae_digits", "lm_pydoc"])  # image and text paths
def test_global_batches_do_not_depend_on_process_count(name):
    cfg = importlib.import_module(f"configs.{name}").get_config("smoke").data
    key = "tokens" if data.is_text(cfg) else "image"
    # Image: 12 batches of 128 cross an epoch of the 1497 training digits.
    n, batch_size = (12, 128) if key == "image" else (6, 8)
    (one,) = _process_batches(cfg, batch_size, 1, n)
    for count in (2, 4):
        shards = _process_batches(cfg, batch_size, count, n)
        for k in range(n):
            joined = np.concatenate([shard[k][key] for shard in shards])
            np.testing.assert_array_equal(joined, one[k][key])
            assert all(len(shard[k][key]) == batch_size // count for shard in shards)
    if key == "image":  # disjoint shards: no example repeats within the first epoch
        first_epoch = np.concatenate([b[key] for b in one[:11]]).reshape(11 * 128, -1)
        assert len(np.unique(first_epoch, axis=0)) > 0.95 * len(first_epoch)


def test_iterator_state_resumes_exactly(smoke_config):
    mesh = sharding.make_mesh(smoke_config.mesh)
    a = data.make_train(smoke_config.data, batch_size=16, mesh=mesh)
    for _ in range(3):
        next(a)
    state = a.iterator.get_state()
    want = np.asarray(next(a)["image"])
    b = data.make_train(smoke_config.data, batch_size=16, mesh=mesh)
    b.iterator.set_state(state)
    np.testing.assert_array_equal(np.asarray(next(b)["image"]), want)


def test_shape_mismatch_names_the_fix(smoke_config):
    smoke_config.data.image_size = 28
    with pytest.raises(ValueError, match=r"--config.data.image_size=8"):
        data.make_source(smoke_config.data, "train")


def test_batch_must_divide_devices(smoke_config):
    mesh = sharding.make_mesh(smoke_config.mesh)
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        data.make_train(smoke_config.data, batch_size=6, mesh=mesh)


def test_synthetic_twin_has_identical_shapes(smoke_config):
    real = data.make_source(smoke_config.data, "train")[0]
    smoke_config.data.name = "synthetic"
    fake = data.make_source(smoke_config.data, "train")[0]
    assert {k: (v.shape, v.dtype) for k, v in real.items()} == {
        k: (np.asarray(v).shape, np.asarray(v).dtype) for k, v in fake.items()
    }


def test_tfds_mnist_path_under_mock_data():
    import tensorflow_datasets as tfds

    from configs import vae_mnist

    config = vae_mnist.get_config()
    mesh = sharding.make_mesh(config.mesh)
    with tfds.testing.mock_data(num_examples=64):
        batch = next(data.make_train(config.data, batch_size=16, mesh=mesh))
        evals = data.make_eval(config.data, batch_size=16, mesh=mesh)
        assert isinstance(evals, grain.MapDataset) and len(evals) >= 1
    assert batch["image"].shape == (16, 28, 28, 1)
    x = np.asarray(batch["image"])
    assert x.min() >= -1 and x.max() <= 1


def test_unprepared_tfds_dataset_says_how_to_prepare(smoke_config, tmp_path):
    smoke_config.data.update(name="mnist", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download_and_prepare"):
        data.make_source(smoke_config.data, "train")
