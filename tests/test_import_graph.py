"""The package's floor plan (docs/architecture.md): its modules live in wings, the wings import each
other one way, and no module imports another in a cycle, counting every import of a minillada
module anywhere in a file (a function's lazy import, a type-checking import too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minillada"
# The wings in reading order: a module imports only from its own wing and the wings before it.
WINGS = ("common", "rope", "modeling", "data", "released", "training", "evals", "claims",
         "figures", "commands")
ENTRY = ("__init__", "__main__", "cli")  # the package's own files, above every wing
# Helpers every wing may use: they import nothing of the package but the torch-free names.
HELPERS = ("common.atomic", "common.seeds", "common.folders", "common.names",
           "modeling.model_shape", "released.model_files", "claims.notebook_parameters")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """minillada module -> the minillada modules it imports (`from minillada.x import y` counts
    as an import of minillada.x.y when that is a module, else of minillada.x)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.update(f"{node.module}.{alias.name}"
                                if f"{node.module}.{alias.name}" in modules else node.module
                                for alias in node.names)
        graph[name] = {other for other in imported
                       if other in modules and other not in (name, "minillada")}
    return graph


def wing(module: str) -> int:
    """The position of a module's wing in WINGS (the entry files come after every wing)."""
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in ENTRY[1:]:
        return len(WINGS)
    return WINGS.index(parts[1])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for other in sorted(graph[node]):
            cycle = visit(other, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_package_is_its_wings():
    entries = sorted(path.stem for path in PACKAGE.iterdir() if path.name != "__pycache__")
    assert entries == sorted((*ENTRY, *WINGS))
    graph = import_graph()
    assert "minillada" in graph and all(name == "minillada" or wing(name) >= 0 for name in graph)


def test_the_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    # the graph sees real imports, lazy ones too
    assert "minillada.training.trainer" in graph["minillada.training.throughput"]
    assert "minillada.training.trainer" in graph["minillada.commands.train"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_from_a_later_wing():
    graph = import_graph()
    upward = sorted(f"{name} -> {other}" for name, imported in graph.items() if name != "minillada"
                    for other in imported if wing(other) > wing(name))
    assert not upward, upward
    assert wing("minillada.released.llada") < wing("minillada.training.config")  # as declared


def test_the_shared_helpers_depend_on_nothing_in_the_package():
    graph = import_graph()
    for helper in HELPERS:
        assert graph[f"minillada.{helper}"] <= {"minillada.common.names"}, helper
    # `minillada eval` never imports the trainer nor the study, not even through another module.
    reached, frontier = set(), {"minillada.commands.eval"}
    while frontier:
        reached |= frontier
        frontier = set().union(*(graph[name] for name in frontier)) - reached
    assert "minillada.evals.retrieval" in reached
    assert not reached & {"minillada.training.trainer", "minillada.claims.study"}


def test_the_docs_list_every_module_under_its_wing():
    """docs/architecture.md's floor plan and the README's layout name each module once, in its
    wing, and name no module that does not exist."""
    modules = {wing: sorted(path.stem for path in (PACKAGE / wing).glob("*.py")
                            if path.stem != "__init__") for wing in WINGS}
    root = PACKAGE.parent
    plan = (root / "docs" / "architecture.md").read_text()
    rows = {row[0]: row[2] for row in (line.strip("|").split("|") for line in plan.splitlines()
                                      if line.startswith("| `"))}
    layout = (root / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, list[str]] = {}
    wing_name = None
    for line in layout.splitlines():
        words = line.split()
        if line.startswith("      ") and not line.startswith("        ") and words:
            wing_name = words[0].rstrip("/")
        elif line.startswith("        ") and words and wing_name in WINGS:
            listed.setdefault(wing_name, []).append(words[0])
    for wing in WINGS:
        in_plan = sorted(name.strip(" `") for name in rows[f" `{wing}/` "].split(","))
        assert in_plan == modules[wing], wing
        if wing != "commands":  # the README names the subcommands, not their files, in one line
            assert sorted(listed[wing]) == modules[wing], wing
