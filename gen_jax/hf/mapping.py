"""The Hugging Face <-> gen_jax mapping, both ways, as pure data and functions
(as MaxText's `param_mapping`): config.json <-> config.model fields, tensor names
<-> param paths, and each tensor's layout.

Read: LlamaForCausalLM (Llama 2/3, SmolLM2; rope_scaling none or llama3),
MistralForCausalLM without a sliding window, Qwen2ForCausalLM, Qwen3ForCausalLM.
gen_jax's RoPE pairs channels as HF's `rotate_half`, so q/k need no permutation:
kernels are transposed ([out, in] -> [in, out]) and reshaped to their heads.
"""

import math

import ml_collections
import numpy as np

SUPPORTED = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
_LLAMA3 = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def _refuse(arch: str, what: str) -> ValueError:
    return ValueError(
        f"{arch} with {what} is not supported; import-hf reads "
        f"{', '.join(SUPPORTED)} (rope_scaling null or llama3, no sliding window)"
    )


def _rope(hf: dict, arch: str) -> tuple[float, tuple]:
    """(rope_theta, rope_llama3) of an HF config.json."""
    # transformers 5 keeps RoPE under rope_parameters; older configs at top level.
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    scaling = hf.get("rope_scaling") or rope
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "llama3":
        return float(theta), tuple(float(scaling[k]) for k in _LLAMA3)
    if kind != "default":
        raise _refuse(arch, f"rope_scaling {kind!r}")
    return float(theta), ()


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
    theta, llama3 = _rope(hf, arch)
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
        "rope_theta": theta,
        "rope_llama3": llama3,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
    }


def _architecture(model: ml_collections.ConfigDict) -> tuple[str, str]:
    """(architectures[0], model_type) that export-hf writes for `model`."""
    if model.mlp != "swiglu" or model.norm != "rms":
        raise ValueError(
            "export-hf writes Llama / Qwen2 / Qwen3 decoders: config.model needs "
            f"mlp='swiglu' and norm='rms' (this run has {model.mlp!r}, {model.norm!r})"
        )
    if model.qk_norm:
        return "Qwen3ForCausalLM", "qwen3"
    if model.qkv_bias:
        return "Qwen2ForCausalLM", "qwen2"
    return "LlamaForCausalLM", "llama"


def hf_config(
    model: ml_collections.ConfigDict, vocab_size: int, dtype: str, base: dict
) -> dict:
    """An HF config.json for `model` (Llama, Qwen2 with q/k/v biases, Qwen3 with
    q/k norm); ids and lengths carried over from `base` (the imported one)."""
    arch, kind = _architecture(model)
    heads = model.num_heads
    ids = ("bos_token_id", "eos_token_id", "pad_token_id")
    out = {k: base[k] for k in ids if k in base}
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


def weights(model: ml_collections.ConfigDict) -> list[tuple[str, tuple, int]]:
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


def from_hf(tensor: np.ndarray, n_in: int, shape: tuple) -> np.ndarray | None:
    """An HF tensor in our layout `shape` (`n_in` as in `weights`), or None where
    its shape does not fit."""
    value = tensor.T if n_in else tensor
    want_in = math.prod(shape[:n_in]) if n_in else tensor.shape[0]
    if tensor.size != math.prod(shape) or value.shape[0] != want_in:
        return None
    return value.reshape(shape)


def to_hf(value: np.ndarray, path: tuple, n_in: int) -> np.ndarray:
    """Our param at `path` in HF's layout: kernels [out, in], biases flat."""
    if n_in:
        return value.reshape(math.prod(value.shape[:n_in]), -1).T
    if path[-1] == "bias":
        return value.reshape(-1)
    return value
