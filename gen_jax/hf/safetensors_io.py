"""Safetensors in and out: an HF directory's tensors read one at a time with
`safe_open` straight into their target sharding, and params written as HF's
(sharded) safetensors files."""

import json

import jax
import ml_collections
import numpy as np
from etils import epath

from gen_jax import pytree
from gen_jax.hf import mapping


def _tensor_files(hf_dir: epath.Path) -> dict[str, epath.Path]:
    """Tensor name -> the .safetensors file holding it (one file or an index)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: hf_dir / f for name, f in weight_map.items()}
    single = hf_dir / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(
            f"{hf_dir} has neither model.safetensors nor model.safetensors.index.json "
            "(PyTorch .bin checkpoints are not read: save with safe_serialization)"
        )
    from safetensors import safe_open

    with safe_open(str(single), "numpy") as f:
        return dict.fromkeys(f.keys(), single)


def load_params(
    hf_dir: str, model: ml_collections.ConfigDict, abstract: dict, dtype: str
) -> dict:
    """The model's params from `hf_dir`'s safetensors, each tensor read alone and
    placed in `abstract`'s sharding as `dtype` (each process reads only its shards'
    slices into device memory)."""
    from safetensors import safe_open

    files = _tensor_files(epath.Path(hf_dir))
    table = mapping.weights(model)
    missing = [name for name, _, _ in table if name not in files]
    if missing:
        raise ValueError(f"{hf_dir}: tensors {missing[:3]} missing for this config")
    out: dict = {}
    for name, path, n_in in table:
        target = pytree.subtree(abstract, path)
        with safe_open(str(files[name]), "numpy") as f:
            tensor = f.get_tensor(name)
        value = mapping.from_hf(tensor, n_in, target.shape)
        if value is None:
            raise ValueError(
                f"{hf_dir}: {name} has shape {tensor.shape}; this config wants "
                f"{target.shape} at {'/'.join(path)}"
            )
        value = np.ascontiguousarray(value).astype(dtype)
        leaf = jax.make_array_from_callback(
            target.shape, target.sharding, lambda i, v=value: v[i]
        )
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
        del tensor, value  # one tensor in host memory at a time
    return out


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of `x` on this host (gathered from every process when sharded
    across them)."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _shards(
    params: dict, model: ml_collections.ConfigDict, dtype: str, max_shard_bytes: int
) -> list[dict[str, np.ndarray]]:
    """The params as HF tensors, grouped into files of about `max_shard_bytes`."""
    shards, current, size = [], {}, 0
    for name, path, n_in in mapping.weights(model):
        value = mapping.to_hf(to_host(pytree.subtree(params, path)), path, n_in)
        current[name] = np.ascontiguousarray(value.astype(dtype))
        size += current[name].nbytes
        if size >= max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    return shards


def save_params(
    params: dict,
    model: ml_collections.ConfigDict,
    out_dir: str,
    dtype: str,
    max_shard_bytes: int = 2**31,
) -> list[str]:
    """Writes params as HF safetensors shards (+ index when more than one);
    returns the file names. Every process gathers, process 0 writes."""
    from safetensors.numpy import save_file

    out = epath.Path(out_dir)
    shards = _shards(params, model, dtype, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            for i in range(len(shards))
        ]
    )
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        weight_map = {}
        for file, shard in zip(names, shards):
            save_file(shard, str(out / file), metadata={"format": "pt"})
            weight_map |= dict.fromkeys(shard, file)
        if len(names) > 1:
            total = sum(v.nbytes for s in shards for v in s.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (out / "model.safetensors.index.json").write_text(
                json.dumps(index, indent=2)
            )
    return names
