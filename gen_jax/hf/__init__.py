"""Hugging Face interop: `mapping` (config and tensor names, both ways),
`safetensors_io` (tensors in and out), `peft` (LoRA adapters), `workdir`
(import-hf and export-hf over checkpoints). The entry points, re-exported for
the tools, tests and benchmarks: `import_run`, `export_run`, `model_fields`."""

from gen_jax.hf.mapping import model_fields
from gen_jax.hf.workdir import export_run, import_run

__all__ = ["export_run", "import_run", "model_fields"]
