"""What a result ran on: the software versions, XLA's flags and the checkout's
commit, recorded beside benchmark rows and sweep trials."""

import functools
import os
import subprocess

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit(short: bool = True) -> str | None:
    """The checkout's commit, "+dirty" when tracked files changed; None
    outside a git checkout (an installed package)."""
    run = functools.partial(
        subprocess.run, cwd=_ROOT, capture_output=True, text=True, check=False
    )
    head = run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"])
    if head.returncode or not head.stdout.strip():
        return None
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout
    return head.stdout.strip() + ("+dirty" if dirty.strip() else "")


def software() -> dict[str, str | None]:
    """jax and jaxlib versions, $XLA_FLAGS and the commit (jax imported here,
    when asked: importing this module stays cheap)."""
    import jax
    import jaxlib

    return {
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "commit": commit(),
    }


# The host CPU's features that decide which kernels a narrow dot gets: bf16
# instructions (AVX512-BF16, AMX) or an emulation. Machines of one kind differ.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
# The instructions that compute a narrow dtype's dots natively, by dtype name.
NARROW_DOT_INSTRUCTIONS = {
    "bfloat16": {"avx512_bf16", "amx_bf16"},
    "float16": {"avx512_fp16", "amx_fp16"},
}


def cpu(path: str = "/proc/cpuinfo") -> dict[str, str | None]:
    """The host CPU: its model name, "family/model" and the CPU_FEATURES it
    has (None where /proc/cpuinfo is absent, e.g. not Linux)."""
    try:
        with open(path) as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {"cpu": None, "cpu_id": None, "cpu_features": None}
    fields = {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in text.splitlines())
    }
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name"),
        "cpu_id": f"{fields.get('cpu family')}/{fields.get('model')}",
        "cpu_features": " ".join(f for f in CPU_FEATURES if f in flags),
    }


def platform() -> dict:
    """The backend, its first device's kind, the device count and the host
    CPU (jax imported when asked)."""
    import jax

    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        **cpu(),
    }
