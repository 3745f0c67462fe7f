"""Data flows one way (DESIGN §1): no module of src/xred imports a module of a layer above its
own, and there is no import cycle between the parts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "xred"
#: lowest first; a part may import its own layer and those below
LAYERS = [
    {"errors", "io", "provenance"},
    {"data"},
    {"engine"},
    {"models"},
    {"explain"},
    {"metrics"},
    {"attacks", "defend", "decipher"},
    {"audit"},
    {"experiments", "report", "train"},
    {"services", "demo"},
    {"cli", "app", "__main__"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}
#: known exceptions, each with the reason it is still here
ALLOWED: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "xred":
                found |= {a.name for a in node.names}
            elif node.module.startswith("xred."):
                found.add(node.module.removeprefix("xred."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("xred.") for a in node.names
                      if a.name.startswith("xred.")}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in ROOT.rglob("*.py") if _module(p) != "__init__"}


def test_every_part_has_a_layer():
    parts = {m.split(".")[0] for m in _graph()}
    assert parts <= set(LAYER), f"give these parts a layer: {sorted(parts - set(LAYER))}"


def test_no_module_imports_a_layer_above_it():
    upward = []
    for module, imports in _graph().items():
        mine = module.split(".")[0]
        for target in imports:
            theirs = target.split(".")[0]
            if theirs in LAYER and LAYER[theirs] > LAYER[mine] and \
                    (mine, target) not in ALLOWED:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_parts():
    """Parts (data, models, explain, attacks.input, ...) form no cycle."""
    def part(module: str) -> str:
        bits = module.split(".")
        return ".".join(bits[:2]) if bits[0] in ("attacks",) and len(bits) > 1 else bits[0]

    edges: dict[str, set[str]] = {}
    for module, imports in _graph().items():
        for target in imports:
            a, b = part(module), part(target)
            if a != b and (module.split(".")[0], target) not in ALLOWED:
                edges.setdefault(a, set()).add(b)
    seen: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in edges.get(node, ()):
            if seen.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for node in list(edges):
        if node not in seen:
            visit(node, [])


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk is not vacuous: a planted upward import is found."""
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from xred.cli import main\n")
    assert "cli" in _imports(bad)
