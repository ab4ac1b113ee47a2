import shutil
import subprocess

import pytest

from tests import helpers


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_is_clean(command):
    paths = ["gen_jax", "configs", "tests"]
    result = subprocess.run(
        ["ruff", *command, *paths],
        cwd=helpers.ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _own_lines(node) -> int:
    """A function's lines, less those of the functions defined inside it (a
    factory such as a family's `make` is measured by its closures, each on
    its own)."""
    import ast

    nested = sum(
        child.end_lineno - child.lineno + 1
        for child in ast.walk(node)
        if child is not node
        and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        and not any(  # count only the outermost nested definitions
            other is not node
            and other is not child
            and isinstance(other, (ast.FunctionDef, ast.AsyncFunctionDef))
            and other.lineno < child.lineno <= other.end_lineno
            for other in ast.walk(node)
        )
    )
    return node.end_lineno - node.lineno + 1 - nested


def test_modules_and_functions_keep_contributing_size_rules():
    """CONTRIBUTING.md: modules up to 300 lines, functions up to 60 of their own."""
    import ast
    import pathlib

    too_long = []
    for path in sorted(pathlib.Path(helpers.ROOT, "gen_jax").rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(helpers.ROOT)
        if (lines := len(source.splitlines())) > 300:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and (own := _own_lines(node)) > 60:
                too_long.append(f"{name}:{node.lineno} {node.name}: {own} lines")
    assert not too_long, "\n".join(too_long)
