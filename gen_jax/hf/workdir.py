"""Hugging Face model directories <-> gen_jax workdirs: `import_run` turns one
into a params-only step-0 checkpoint, `export_run` writes a run's EMA params back
(config.json, safetensors, tokenizer files; a LoRA run's PEFT adapter)."""

import json
import shutil

import jax
import ml_collections
from etils import epath

from gen_jax.hf import mapping, peft, safetensors_io
from gen_jax.models import transformer

# Copied into WORKDIR/hf/ by import and back out by export.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
)
DTYPES = ("float32", "bfloat16", "float16")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r}; valid: {', '.join(DTYPES)}")


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
    """`hf_dir`'s config.json."""
    path = epath.Path(hf_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{hf_dir} is not a Hugging Face model directory (no config.json)"
        )
    return json.loads(path.read_text())


def _read_model(hf_dir: str, config: ml_collections.ConfigDict, dtype: str) -> dict:
    """The model params in `hf_dir`, sharded as `config` (mesh, scan_layers) says."""
    from gen_jax import checkpoint, families, sharding

    mesh = sharding.make_mesh(config.mesh)
    # Read into the unrolled layout (one tensor per layer, as HF stores them);
    # a scanned model then stacks the layers (briefly holding both on device).
    unrolled = ml_collections.ConfigDict(config.to_dict())
    unrolled.model.scan_layers = False
    abstract = checkpoint.abstract_of(families.make(unrolled).init, unrolled, mesh)[0]
    model = safetensors_io.load_params(hf_dir, config.model, abstract["model"], dtype)
    if config.model.get("scan_layers"):
        scanned = checkpoint.abstract_of(families.make(config).init, config, mesh)[0]
        stacked = transformer.stack_layers(model, config.model.num_layers)
        shardings = jax.tree.map(lambda a: a.sharding, scanned["model"])
        model = jax.device_put(stacked, shardings)
    return model


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
    from gen_jax import checkpoint

    _check_dtype(dtype)
    fields = mapping.model_fields(read_config(hf_dir))
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
    params = {"model": _read_model(hf_dir, config, dtype)}
    checkpoint.write_config(config, workdir)
    checkpoint.save_params(workdir, params)
    return config


def export_run(
    workdir: str, out_dir: str, *, merge: bool = False, dtype: str = "float32"
) -> list[str]:
    """Writes `workdir`'s newest EMA params as an HF directory (config.json,
    safetensors, tokenizer files). A LoRA run writes its base model and a PEFT
    adapter in OUT/adapter, or with `merge` the merged weights. Returns the
    directories written."""
    from gen_jax import checkpoint, families, sharding

    _check_dtype(dtype)
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
    abstract = checkpoint.abstract_of(family.init, config, mesh)[0]
    params, _ = checkpoint.load_params(workdir, abstract, ema=True)
    model_params, adapters = peft.model_params(family, params, config, out_dir, merge)
    if config.model.get("scan_layers"):  # HF stores one tensor per layer
        model_params = transformer.unstack_layers(model_params)
    safetensors_io.save_params(model_params, config.model, out_dir, dtype)
    if jax.process_index() == 0:
        cfg = mapping.hf_config(config.model, family.text.model.vocab_size, dtype, base)
        (epath.Path(out_dir) / "config.json").write_text(json.dumps(cfg, indent=2))
    copy_tokenizer(tokenizer_dir, out_dir)
    return [out_dir, *adapters]
