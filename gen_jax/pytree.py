"""Nested params dicts: lookups by path (LoRA's adapters, Hugging Face
interop) and the first difference of two trees' shapes (loading one run's
params into another, restoring a checkpoint)."""

from typing import Any

import jax


def subtree(tree: Any, path: tuple) -> Any:
    """The subtree of nested dicts at `path` (a tuple of keys), or None where
    it is absent."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def mismatch(tree: Any, like: Any) -> str:
    """ "" when `tree` has `like`'s keys and leaf shapes, else the first
    difference ("model/block_1/kernel: (4, 8) vs (4, 16)"), for errors."""
    if isinstance(like, dict) or isinstance(tree, dict):
        if not (isinstance(tree, dict) and isinstance(like, dict)):
            return "a dict vs a leaf"
        for key in sorted(set(tree) | set(like)):
            if key not in tree or key not in like:
                side = "missing" if key not in tree else "unexpected"
                return f"{key}: {side}"
            inner = mismatch(tree[key], like[key])
            if inner:
                return f"{key}/{inner}"
        return ""
    got, want = tuple(getattr(tree, "shape", ())), tuple(getattr(like, "shape", ()))
    return "" if got == want else f"{got} vs {want}"


def flat_shapes(tree) -> dict[str, tuple]:
    """{"params/model/w": (shape, dtype)} for a state or its saved metadata: the
    same names whether a node is a dataclass, a dict, a tuple or a list."""

    def name(key) -> str:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(name(k) for k in path): (tuple(x.shape), str(x.dtype))
        for path, x in leaves
    }


def flat_mismatch(saved: dict, want: dict) -> str | None:
    """The first difference between the saved and the wanted arrays, in words."""
    for key in sorted(want.keys() | saved.keys()):
        if key not in saved:
            return f"{key} is in this config but not in the checkpoint"
        if key not in want:
            return f"{key} is in the checkpoint but not in this config"
        if saved[key] != want[key]:
            return f"{key} is {saved[key]} there, {want[key]} here"
    return None
