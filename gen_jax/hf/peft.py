"""LoRA runs in Hugging Face's terms: the adapters as a PEFT directory
(`PeftModel.from_pretrained(model, DIR)` loads it), or folded into the base."""

import json

import jax
import ml_collections
import numpy as np
from etils import epath

from gen_jax import pytree
from gen_jax.families import lora
from gen_jax.hf import mapping, safetensors_io


def save_adapter(
    adapters: dict,
    model: ml_collections.ConfigDict,
    cfg: ml_collections.ConfigDict,
    out: epath.Path,
    base_dir: str,
) -> None:
    """A PEFT LoRA directory: lora_A [r, in] = A^T and lora_B [out, r] = B^T per
    adapted projection, so peft's B A (alpha / r) is our (A B)^T."""
    from safetensors.numpy import save_file

    tensors, modules = {}, set()
    for name, path, n_in in mapping.weights(model):
        node = pytree.subtree(adapters, path[:-1])
        if n_in == 0 or node is None or "lora_a" not in node:
            continue
        prefix = "base_model.model." + name[: -len(".weight")]
        for ours, theirs in (("lora_a", "lora_A"), ("lora_b", "lora_B")):
            tensors[f"{prefix}.{theirs}.weight"] = np.ascontiguousarray(
                safetensors_io.to_host(node[ours]).T
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


def model_params(
    family, params: dict, config: ml_collections.ConfigDict, out_dir: str, merge: bool
) -> tuple[dict, list[str]]:
    """(the model params export-hf writes, the extra directories written): a
    LoRA run's base with its adapter saved to OUT/adapter, or with `merge` the
    weights it is deployed with (merged); any other run's own params."""
    if lora.BASE not in params:
        return params["model"], []
    if merge:
        return family.deployed(params)[1]["model"], []
    adapter_dir = epath.Path(out_dir) / "adapter"
    save_adapter(params["model"], config.model, config.lora, adapter_dir, str(out_dir))
    return params[lora.BASE]["model"], [str(adapter_dir)]
