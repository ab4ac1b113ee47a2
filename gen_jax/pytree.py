"""Nested params dicts: lookups by path (LoRA's adapters, Hugging Face
interop) and the first difference of two trees' shapes (loading one run's
params into another)."""

from typing import Any


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
