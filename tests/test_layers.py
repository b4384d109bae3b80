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


# ---------------------------------------------------------------------------- what a stage takes

MAX_STAGE_PARAMETERS = 8  # a stage reads stage(input, lab, the part of the recipe it needs): DESIGN.md


def _called_from(source: str, stage_modules: set[str]) -> set[tuple[str, str]]:
    """(module, function) for every function of a stage module that `source` names: `module.function` after
    `from edgekit.stages import module`, or `function` after `from edgekit.stages.module import function`."""
    tree = ast.parse(source)
    aliases, functions = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in stage_modules:
                    aliases[alias.asname or alias.name] = full
                elif node.module in stage_modules:
                    functions.add((node.module, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            functions.add((aliases[node.value.id], node.attr))
    return functions


def _too_many(functions: set[tuple[str, str]]) -> list[str]:
    import importlib

    # getattr's default: a local variable that shadows a module's name (`report = read_json(...)`; report.get)
    return _over_limit({f"{module}.{name}": getattr(importlib.import_module(module), name, None)
                        for module, name in sorted(functions)})


def _over_limit(named: dict) -> list[str]:
    import inspect

    return [f"{name} takes {len(inspect.signature(thing).parameters)}" for name, thing in named.items()
            if inspect.isfunction(thing) and len(inspect.signature(thing).parameters) > MAX_STAGE_PARAMETERS]


def _stage_functions() -> set[tuple[str, str]]:
    stage_modules = {name for name in _modules() if name.startswith("edgekit.stages.")}
    pipeline = (PACKAGE / "pipeline.py").read_text(encoding="utf-8")
    own = {("edgekit.pipeline", node.name) for node in ast.parse(pipeline).body if isinstance(node, ast.FunctionDef)}
    return _called_from(pipeline, stage_modules) | own


def test_every_stage_function_the_pipeline_calls_takes_at_most_eight_parameters():
    functions = _stage_functions()
    # the check reaches the stages it is about (a rename would otherwise leave it checking nothing)
    assert {("edgekit.stages.probe", "probe"), ("edgekit.stages.distill.stage", "distill_student"),
            ("edgekit.pipeline", "_evaluate"), ("edgekit.stages.measure", "time_rows"),
            ("edgekit.stages.select", "decide"), ("edgekit.stages.report", "build_report"),
            ("edgekit.stages.bundle", "ship"), ("edgekit.stages.teacher", "teacher_rows")} <= functions
    assert _too_many(functions) == []


def test_the_parameter_check_finds_a_stage_that_takes_too_many():
    # The check itself can fail: it finds what a pipeline names, and flags a function of nine parameters.
    source = "from edgekit.stages.distill import stage\nstage.distill\n"
    assert _called_from(source, {"edgekit.stages.distill.stage"}) == {("edgekit.stages.distill.stage", "distill")}

    def nine(a, b, c, d, e, f, g, h, i):
        return a

    assert _over_limit({"nine": nine, "eight": lambda a, b, c, d, e, f, g, h: a}) == ["nine takes 9"]
