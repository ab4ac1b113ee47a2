"""Lookups by path in nested params dicts: LoRA's adapters and Hugging Face interop."""

from typing import Any


def subtree(tree: Any, path: tuple) -> Any:
    """The subtree of nested dicts at `path` (a tuple of keys), or None where
    it is absent."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree
