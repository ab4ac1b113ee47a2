"""Hugging Face decoders in and out: config.json <-> config.model, safetensors <->
params (tensor by tensor, straight into their sharding), tokenizer files copied.

Read: LlamaForCausalLM (Llama 2/3, SmolLM2; rope_scaling none or llama3),
MistralForCausalLM without a sliding window, Qwen2ForCausalLM, Qwen3ForCausalLM.
gen_jax's RoPE pairs channels as HF's `rotate_half`, so q/k need no permutation:
kernels are transposed ([out, in] -> [in, out]) and reshaped to their heads.
"""

import json
import math
import shutil

import jax
import ml_collections
import numpy as np
from etils import epath

from gen_jax.models import transformer

SUPPORTED = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
# Copied into WORKDIR/hf/ by import and back out by export.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
)
DTYPES = ("float32", "bfloat16", "float16")


def _refuse(arch: str, what: str) -> ValueError:
    return ValueError(
        f"{arch} with {what} is not supported; import-hf reads "
        f"{', '.join(SUPPORTED)} (rope_scaling null or llama3, no sliding window)"
    )


def model_fields(hf: dict) -> dict:
    """config.model fields for an HF config.json, or a one-line refusal."""
    arch = (hf.get("architectures") or ["(no architectures)"])[0]
    if arch not in SUPPORTED:
        raise ValueError(
            f"{arch} is not supported; import-hf reads {', '.join(SUPPORTED)}"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise _refuse(arch, f"hidden_act={hf['hidden_act']!r}")
    if arch in SUPPORTED[:2] and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise _refuse(arch, "attention_bias / mlp_bias")
    window = hf.get("sliding_window")
    if (arch == "MistralForCausalLM" and window) or hf.get("use_sliding_window"):
        raise _refuse(arch, f"a sliding window ({window})")
    # transformers 5 keeps RoPE under rope_parameters; older configs at top level.
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    scaling = hf.get("rope_scaling") or rope
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    llama3 = ()
    if kind == "llama3":
        llama3 = tuple(
            float(scaling[k])
            for k in (
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            )
        )
    elif kind != "default":
        raise _refuse(arch, f"rope_scaling {kind!r}")
    heads = hf["num_attention_heads"]
    return {
        "name": "transformer",
        "vocab_size": hf["vocab_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": heads,
        "num_kv_heads": hf.get("num_key_value_heads") or heads,
        "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
        "embed_dim": hf["hidden_size"],
        "mlp_dim": hf["intermediate_size"],
        "norm": "rms",
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "mlp": "swiglu",
        "qkv_bias": arch == "Qwen2ForCausalLM",
        "qk_norm": arch == "Qwen3ForCausalLM",
        "rope_theta": float(theta),
        "rope_llama3": llama3,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
    }


def _weights(model: ml_collections.ConfigDict) -> list[tuple[str, tuple, int]]:
    """(HF tensor name, gen_jax param path, n): n > 0 is a kernel whose first n
    axes are its input (HF stores [out, in]); 0 is copied, reshaped."""
    out = [
        ("model.embed_tokens.weight", ("Embed_0", "embedding"), 0),
        ("model.norm.weight", ("final_norm", "scale"), 0),
    ]
    if not model.tie_embeddings:
        out.append(("lm_head.weight", ("unembed", "kernel"), 1))
    for i in range(model.num_layers):
        hf, ours = f"model.layers.{i}.", f"block_{i}"
        out += [
            (hf + "input_layernorm.weight", (ours, "attn_norm", "scale"), 0),
            (hf + "post_attention_layernorm.weight", (ours, "mlp_norm", "scale"), 0),
            (hf + "self_attn.o_proj.weight", (ours, "attn_out", "kernel"), 2),
        ]
        for p in ("q", "k", "v"):
            out.append((hf + f"self_attn.{p}_proj.weight", (ours, p, "kernel"), 1))
            if model.qkv_bias:
                out.append((hf + f"self_attn.{p}_proj.bias", (ours, p, "bias"), 0))
        if model.qk_norm:
            for p in ("q", "k"):
                out.append(
                    (hf + f"self_attn.{p}_norm.weight", (ours, f"{p}_norm", "scale"), 0)
                )
        for p, name in (
            ("gate", "gate_proj"),
            ("up", "up_proj"),
            ("down", "down_proj"),
        ):
            out.append((hf + f"mlp.{name}.weight", (ours, p, "kernel"), 1))
    return out


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


def _node(tree: dict, path: tuple):
    """The subtree at `path`, or None where it is absent."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def load_params(
    hf_dir: str, model: ml_collections.ConfigDict, abstract: dict, dtype: str
) -> dict:
    """The model's params from `hf_dir`'s safetensors, each tensor read alone and
    placed in `abstract`'s sharding as `dtype` (each process reads only its shards'
    slices into device memory)."""
    from safetensors import safe_open

    files = _tensor_files(epath.Path(hf_dir))
    table = _weights(model)
    missing = [name for name, _, _ in table if name not in files]
    if missing:
        raise ValueError(f"{hf_dir}: tensors {missing[:3]} missing for this config")
    out: dict = {}
    for name, path, n_in in table:
        target = _node(abstract, path)
        with safe_open(str(files[name]), "numpy") as f:
            tensor = f.get_tensor(name)
        value = tensor.T if n_in else tensor
        want_in = math.prod(target.shape[:n_in]) if n_in else tensor.shape[0]
        if tensor.size != math.prod(target.shape) or value.shape[0] != want_in:
            raise ValueError(
                f"{hf_dir}: {name} has shape {tensor.shape}; this config wants "
                f"{target.shape} at {'/'.join(path)}"
            )
        value = np.ascontiguousarray(value.reshape(target.shape)).astype(dtype)
        leaf = jax.make_array_from_callback(
            target.shape, target.sharding, lambda i, v=value: v[i]
        )
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
        del tensor, value  # one tensor in host memory at a time
    return out


def hf_config(
    model: ml_collections.ConfigDict, vocab_size: int, dtype: str, base: dict
) -> dict:
    """An HF config.json for `model` (Llama, Qwen2 with q/k/v biases, Qwen3 with
    q/k norm); ids and lengths carried over from `base` (the imported one)."""
    if model.mlp != "swiglu" or model.norm != "rms":
        raise ValueError(
            "export-hf writes Llama / Qwen2 / Qwen3 decoders: config.model needs "
            f"mlp='swiglu' and norm='rms' (this run has {model.mlp!r}, {model.norm!r})"
        )
    arch, kind = (
        ("Qwen3ForCausalLM", "qwen3")
        if model.qk_norm
        else ("Qwen2ForCausalLM", "qwen2")
        if model.qkv_bias
        else ("LlamaForCausalLM", "llama")
    )
    heads = model.num_heads
    out = {
        k: base[k]
        for k in ("bos_token_id", "eos_token_id", "pad_token_id")
        if k in base
    }
    scaling = None
    if model.rope_llama3:
        factor, low, high, original = model.rope_llama3
        scaling = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": int(original),
        }
    return out | {
        "architectures": [arch],
        "model_type": kind,
        "vocab_size": vocab_size,
        "hidden_size": model.embed_dim,
        "intermediate_size": model.mlp_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": model.num_kv_heads or heads,
        "head_dim": model.head_dim or model.embed_dim // heads,
        "hidden_act": "silu",
        "rms_norm_eps": model.norm_eps,
        "rope_theta": model.rope_theta,
        "rope_scaling": scaling,
        "tie_word_embeddings": bool(model.tie_embeddings),
        "attention_bias": False,
        "mlp_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_position_embeddings": base.get("max_position_embeddings", 4096),
        "dtype": dtype,
    }


def _host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
    shards, current, size = [], {}, 0
    for name, path, n_in in _weights(model):
        value = _host(_node(params, path))
        if n_in:
            value = value.reshape(math.prod(value.shape[:n_in]), -1).T
        elif path[-1] == "bias":
            value = value.reshape(-1)
        current[name] = np.ascontiguousarray(value.astype(dtype))
        size += current[name].nbytes
        if size >= max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
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


def copy_tokenizer(src: str, dst: str) -> list[str]:
    """Copies the tokenizer (and generation) files that exist; returns their names."""
    src_path, dst_path = epath.Path(src), epath.Path(dst)
    if not (src_path / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{src} has no tokenizer.json (gen_jax reads fast tokenizers only)"
        )
    copied = []
    if jax.process_index() == 0:
        dst_path.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src_path / name).exists():
            if jax.process_index() == 0:
                shutil.copyfile(src_path / name, dst_path / name)
            copied.append(name)
    return copied


def read_config(hf_dir: str) -> dict:
    path = epath.Path(hf_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{hf_dir} is not a Hugging Face model directory (no config.json)"
        )
    return json.loads(path.read_text())


def import_run(
    hf_dir: str,
    workdir: str,
    config: ml_collections.ConfigDict,
    *,
    dtype: str = "float32",
) -> ml_collections.ConfigDict:
    """Turns a local HF model directory into a gen_jax workdir: the tokenizer
    files under WORKDIR/hf/, the resolved config.json (`config` with the model's
    fields), and a params-only step-0 checkpoint. Returns the config."""
    from gen_jax import checkpoint, families, sharding

    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r}; valid: {', '.join(DTYPES)}")
    hf = read_config(hf_dir)
    fields = model_fields(hf)
    if checkpoint.checkpoints_dir(workdir).exists():
        raise ValueError(
            f"--workdir={workdir} already holds checkpoints; give a new one"
        )
    tokenizer_dir = epath.Path(workdir) / "hf"
    copy_tokenizer(hf_dir, str(tokenizer_dir))
    if jax.process_index() == 0:
        shutil.copyfile(
            epath.Path(hf_dir) / "config.json", tokenizer_dir / "config.json"
        )
    config.model.update(fields)
    config.data.update(tokenizer="hf", tokenizer_dir=str(tokenizer_dir.resolve()))
    config.lora.rank = 0
    config.train.init_from = ""
    mesh = sharding.make_mesh(config.mesh)
    # Read into the unrolled layout (one tensor per layer, as HF stores them);
    # a scanned model then stacks the layers (briefly holding both on device).
    unrolled = ml_collections.ConfigDict(config.to_dict())
    unrolled.model.scan_layers = False
    abstract = checkpoint.abstract_params(families.make(unrolled), unrolled, mesh)
    model = load_params(hf_dir, config.model, abstract["model"], dtype)
    if config.model.get("scan_layers"):
        scanned = checkpoint.abstract_params(families.make(config), config, mesh)
        stacked = transformer.stack_layers(model, config.model.num_layers)
        shardings = jax.tree.map(lambda a: a.sharding, scanned["model"])
        model = jax.device_put(stacked, shardings)
    params = {"model": model}
    checkpoint.write_config(config, workdir)
    checkpoint.save_params(workdir, params)
    return config


def _peft_adapter(adapters: dict, model, cfg, out: epath.Path, base_dir: str) -> None:
    """A PEFT LoRA directory: lora_A [r, in] = A^T and lora_B [out, r] = B^T per
    adapted projection, so peft's B A (alpha / r) is our (A B)^T."""
    from safetensors.numpy import save_file

    tensors, modules = {}, set()
    for name, path, n_in in _weights(model):
        node = _node(adapters, path[:-1])
        if n_in == 0 or node is None or "lora_a" not in node:
            continue
        prefix = "base_model.model." + name[: -len(".weight")]
        tensors[prefix + ".lora_A.weight"] = np.ascontiguousarray(
            _host(node["lora_a"]).T
        )
        tensors[prefix + ".lora_B.weight"] = np.ascontiguousarray(
            _host(node["lora_b"]).T
        )
        modules.add(name.split(".")[-2])
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"}
        )
        adapter_config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_dir,
            "r": cfg.rank,
            "lora_alpha": cfg.alpha,
            "lora_dropout": cfg.dropout,
            "target_modules": sorted(modules),
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "init_lora_weights": True,
            "inference_mode": True,
        }
        (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))


def export_run(
    workdir: str, out_dir: str, *, merge: bool = False, dtype: str = "float32"
) -> list[str]:
    """Writes `workdir`'s newest EMA params as an HF directory (config.json,
    safetensors, tokenizer files). A LoRA run writes its base model and a PEFT
    adapter in OUT/adapter, or with `merge` the merged weights. Returns the
    directories written."""
    from gen_jax import checkpoint, families, sharding
    from gen_jax.families import lora

    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r}; valid: {', '.join(DTYPES)}")
    config = checkpoint.load_config(workdir)
    family = families.make(config)
    if family.text is None or config.data.tokenizer != "hf":
        raise ValueError(
            "export-hf writes LM runs with a Hugging Face tokenizer "
            f"(data.tokenizer='hf'); this run has family={config.family!r}, "
            f"tokenizer={config.data.get('tokenizer')!r}"
        )
    tokenizer_dir = config.data.tokenizer_dir
    base_cfg_path = epath.Path(tokenizer_dir) / "config.json"
    base = json.loads(base_cfg_path.read_text()) if base_cfg_path.exists() else {}
    mesh = sharding.make_mesh(config.mesh)
    abstract = checkpoint.abstract_params(family, config, mesh)
    params, _ = checkpoint.load_params(workdir, abstract, ema=True)
    is_lora = lora.BASE in params
    vocab = family.text.model.vocab_size
    written = [out_dir]
    if is_lora and merge:
        model_params = lora.merge(params, config.lora.alpha / config.lora.rank)["model"]
    elif is_lora:
        model_params = params[lora.BASE]["model"]
        _peft_adapter(
            params["model"],
            config.model,
            config.lora,
            epath.Path(out_dir) / "adapter",
            str(out_dir),
        )
        written.append(str(epath.Path(out_dir) / "adapter"))
    else:
        model_params = params["model"]
    if config.model.get("scan_layers"):  # HF stores one tensor per layer
        model_params = transformer.unstack_layers(model_params)
    save_params(model_params, config.model, out_dir, dtype)
    if jax.process_index() == 0:
        cfg = hf_config(config.model, vocab, dtype, base)
        (epath.Path(out_dir) / "config.json").write_text(json.dumps(cfg, indent=2))
    copy_tokenizer(tokenizer_dir, out_dir)
    return written
