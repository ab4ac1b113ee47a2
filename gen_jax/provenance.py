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
