"""The layers are contracts (STYLE.md 12-13): no import cycle between any two modules of poser_interp, the
import-linter contracts in pyproject.toml hold (`lint-imports`, also run by .ci/run), notebooks and scripts use the
public API, and `import poser_interp` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

import poser_interp

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_MODULES = {"poser_interp", "poser_interp.strategies", "poser_interp.viz", "poser_interp.removal",
                    "poser_interp.suite", "poser_interp.errors"}
"""What notebooks may import from: the public API and the documented packages (a strategy's own module, e.g.
`poser_interp.strategies.lens`, and the figure modules of `poser_interp.viz` count as documented)."""


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan, iterative): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_any_two_modules():
    # function-local and TYPE_CHECKING imports count: a cycle hidden inside a function is still a cycle
    graph = grimp.build_graph("poser_interp", cache_dir=None)
    cycles = _cycles(graph)
    detail = [" -> ".join(graph.find_shortest_chain(c[0], c[1]) or ()) + " -> ... -> " + c[0] for c in cycles]
    assert not cycles, "import cycles (break each by moving the shared code into the lower module):\n" + \
        "\n".join(detail)


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _poser_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `poser_interp` import in a file, at any depth (function-local ones included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(n, m) for n, m in found if m == "poser_interp" or m.startswith("poser_interp.")]


def test_notebooks_import_only_the_public_api():
    def public(module: str) -> bool:
        parts = module.split(".")
        return module in NOTEBOOK_MODULES or ".".join(parts[:2]) in NOTEBOOK_MODULES - {"poser_interp"}

    bad = [f"{path.name}:{n}: {m}" for path in sorted((REPO / "notebooks").glob("*.py"))
           for n, m in _poser_imports(path) if not public(m)]
    assert not bad, "notebooks import internals; add the name to poser_interp/__init__.py:\n" + "\n".join(bad)


def test_scripts_do_not_use_the_cli_as_a_library():
    scripts = [*(REPO / "analyses").glob("*.py"), *(REPO / "research" / "experiments").glob("*.py"),
               *(REPO / "bench").glob("*.py"), *(REPO / "notebooks").glob("*.py")]
    bad = [f"{path.relative_to(REPO)}:{n}: {m}" for path in sorted(scripts) for n, m in _poser_imports(path)
           if m.startswith("poser_interp.cli") and m != "poser_interp.cli"]
    assert not bad, "scripts import CLI modules as a library (use poser_interp.analysis):\n" + "\n".join(bad)


def test_public_api_is_lazy_and_complete():
    code = "import sys, poser_interp; print('torch' in sys.modules, 'poser_interp.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], "`import poser_interp` must stay cheap: no torch, no submodule loaded"
    lazy = set(poser_interp._LAZY)
    eager = {n for n in poser_interp.__all__ if n not in lazy}
    assert set(poser_interp.__all__) == lazy | eager and all(hasattr(poser_interp, n) for n in poser_interp.__all__)
    assert eager <= {"__version__"} | {n for n in eager if n.endswith("Error")}, eager
    typed = {}  # what type checkers see must be what __getattr__ returns
    tree = ast.parse(Path(poser_interp.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            typed |= {a.asname or a.name: (imp.module, a.name) for imp in node.body if isinstance(imp, ast.ImportFrom)
                      for a in imp.names}
    assert typed == poser_interp._LAZY, f"TYPE_CHECKING block and _LAZY differ: {sorted(set(typed) ^ lazy)}"
