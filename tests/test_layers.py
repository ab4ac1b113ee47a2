"""The layering: import-linter's contracts in pyproject.toml (tools above the
library, library layers one way; training, deploy and Hugging Face interop
independent; deploy's own layers; serving without flax, optax or families), no
import cycle anywhere in gen_jax (function-level imports included)."""

import subprocess
import tomllib

import grimp

from tests import helpers


def test_every_import_linter_contract_is_kept():
    with open(f"{helpers.ROOT}/pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} == {"layers", "independence", "forbidden"}
    result = subprocess.run(
        ["lint-imports"], cwd=helpers.ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(contracts)} kept, 0 broken" in result.stdout
    report = " ".join(result.stdout.split())  # long names wrap
    for contract in contracts:
        assert " ".join(contract["name"].split()) + " KEPT" in report, contract["name"]


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
