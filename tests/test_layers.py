"""The import graph of edgekit/: no cycle, no stage importing a later stage, no library importing a stage.

Read with `ast`, imports inside functions included (those are what used to hold cycles together).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"

# The stages in the order pipeline.py runs them (DESIGN.md's flow). measure is not among them: it is the
# unit of measurement the teacher, probe and evaluate steps all use, below every stage.
STAGES = ["edgekit.stages.loading", "edgekit.stages.teacher", "edgekit.stages.students", "edgekit.stages.probe", "edgekit.stages.distill.stage",
          "edgekit.stages.select", "edgekit.stages.gap", "edgekit.stages.bundle", "edgekit.stages.report", "edgekit.pipeline"]
# Commands over a run's results, above every stage.
COMMANDS = {"edgekit.cli", "edgekit.trust.verify", "edgekit.starter", "edgekit.shipped", "edgekit.testing"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict) -> set[str]:
    """The edgekit modules `path` imports, anywhere in the file (`from edgekit.x import y` is edgekit.x.y
    when that is a module, else edgekit.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgekit":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "edgekit"}
    return {name for name in found if name in modules and name != "edgekit"}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_stages_and_commands_named_here_exist():
    # A renamed module must be renamed here too, or the checks below would pass by checking nothing.
    assert set(STAGES) | COMMANDS <= set(_modules())


def test_edgekit_has_no_import_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_no_stage_imports_a_later_stage():
    rank = {name: i for i, name in enumerate(STAGES)}
    upward = [f"{a} imports {b}" for a, deps in _graph().items() if a in rank
              for b in deps if b in rank and rank[b] > rank[a]]
    assert upward == []


def test_no_library_module_imports_a_stage_or_a_command():
    above = set(STAGES) | COMMANDS
    upward = [f"{a} imports {b}" for a, deps in _graph().items() if a not in above for b in deps if b in above]
    assert upward == []


def test_names_is_the_bottom_it_imports_nothing():
    assert _graph()["edgekit.names"] == set()
    tree = ast.parse((PACKAGE / "names.py").read_text(encoding="utf-8"))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def test_the_cycle_check_finds_a_cycle():
    # The check itself can fail: a -> b -> c -> a is found, a tree is not.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
