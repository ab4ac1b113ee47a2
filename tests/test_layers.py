"""The layering: tools above the library, library layers one way (import-linter's
contract in pyproject.toml), no import cycle anywhere in gen_jax (function-level
imports included), and configs that import neither JAX nor gen_jax."""

import subprocess

import grimp

from tests import helpers


def test_import_linter_layers_contract_is_kept():
    result = subprocess.run(
        ["lint-imports"], cwd=helpers.ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def _cycle(graph) -> list[str] | None:
    """One import cycle among the graph's modules, or None."""
    state = {}  # module -> "open" while on the DFS stack, "done" after

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(other) == "open":
                return path[path.index(other) :] + [other]
            if other not in state and (found := visit(other, path + [other])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph.modules):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_no_import_cycle_inside_gen_jax():
    graph = grimp.build_graph("gen_jax")  # counts imports inside functions too
    assert len(graph.modules) > 30
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert _cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
