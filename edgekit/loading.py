"""Stage 1: a recipe file becomes a validated Recipe, and its tasks' data is loaded.

load_recipe validates (profile merged in), `check_recipe` finds every problem a user can fix before
any expensive work (data sources and columns, the teacher's files and family, providers, the
signing key), and load_tasks reads and splits each task's examples. `edgekit recipe check` runs
exactly the first two.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from edgekit.errors import DataError, EdgekitError, RecipeError
from edgekit.models import resolve_teacher
from edgekit.recipe import DataSpec, Recipe, StudentSpace, TeacherSpec, _line_of, _locate, validation_problems
from edgekit.tasks import TASK_KINDS


def recipe_from_dict(data, where: str = "recipe", text: str | None = None, folder: Path | None = None) -> Recipe:
    """Validate a parsed recipe; every problem is listed with its key path (and YAML line).
    A `target:` profile is resolved (relative paths from `folder`) and fills the keys the recipe leaves out."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping (name:, teacher:, tasks:, budget: ...), "
                          f"not a {type(data).__name__}.")
    profile = None
    if isinstance(data.get("target"), str):
        from edgekit.profiles import apply_profile

        line = _line_of(text, ("target",)) if text else None
        data, profile = apply_profile(data, data["target"], folder, f"{where}:{line}" if line else where)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        # The parts that validate on their own are checked as a valid recipe's are, so one round of fixes is enough.
        problems = validation_problems(e, where, text) + [
            f"  {_locate(where, text, key)}: {key}: {message}" for key, message in _part_problems(data)]
        raise RecipeError(f"{where} has {len(problems)} problem(s):\n" + "\n".join(problems)) from None
    # What the recipe leaves out of the teacher's settings comes from its sentence-transformers folder.
    recipe = recipe.model_copy(update={"teacher": resolve_teacher(recipe.teacher)})
    recipe._profile_file = str(profile) if profile else None
    recipe._source = (where, text)
    return recipe


def load_recipe(path: str | Path, target: str | None = None) -> Recipe:
    """Read and validate a YAML recipe file; `target` replaces its deployment profile (`--target`)."""
    from edgekit.reading import shown
    from edgekit.recipe import load_yaml, read_config_text

    path = Path(path)
    fix = "pass the path of a YAML recipe (see recipes/ for examples)"
    try:
        exists = path.exists()
    except OSError:  # a name the file system refuses (too long): read_config_text says so
        exists = True
    if not exists:
        raise RecipeError(f"recipe '{shown(path)}' does not exist; {fix}.")
    # Not a regular file (a FIFO, /dev/zero), too large, not UTF-8: refused before (or instead of) parsing.
    text = read_config_text(path, "recipe", fix)
    # Nested too deep, an alias bomb, python-object tags, bad syntax: refused with the line.
    data = load_yaml(text, shown(path), "recipe")
    if target is not None and isinstance(data, dict):
        data = {**data, "target": target}
    return recipe_from_dict(data, shown(path), text, path.parent)


def _problems(sources: list[tuple[str, str | None, DataSpec]], teacher: TeacherSpec | None,
              students: StudentSpace | None = None) -> list[tuple[str, str]]:
    """(key path, message) for every data source (key, task kind or None for unlabeled text, spec) and the
    teacher's files and family: the one preflight, run on a valid recipe and on the valid parts of an invalid one."""
    from edgekit.data.tasks import spec_problems
    from edgekit.families import family_problem
    from edgekit.models import teacher_problem

    found = []
    for key, kind, spec in sources:
        found += [problem.partition(": ")[::2] for problem in spec_problems(spec, kind, key)]
    problem = teacher and (teacher_problem(teacher) or family_problem(teacher, students))  # layer students: a family
    if problem:
        found.append(("teacher.model", problem))
    return found


def _part_problems(data: dict) -> list[tuple[str, str]]:
    def valid(model, value):
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    sources = []
    tasks = data.get("tasks") if isinstance(data.get("tasks"), list) else []
    for i, task in enumerate(tasks):
        spec = valid(DataSpec, task.get("data")) if isinstance(task, dict) else None
        if spec is not None and task.get("kind") in TASK_KINDS:
            sources.append((f"tasks.{i}.data", task["kind"], spec))
    distill = data.get("distill") if isinstance(data.get("distill"), dict) else {}
    unlabeled = distill.get("unlabeled") if isinstance(distill.get("unlabeled"), list) else []
    for j, value in enumerate(unlabeled):
        if (spec := valid(DataSpec, value)) is not None:
            sources.append((f"distill.unlabeled.{j}", None, spec))
    students = data.get("students") if isinstance(data.get("students"), dict) else {}
    return _problems(sources, valid(TeacherSpec, data.get("teacher")), valid(StudentSpace, students))


def available_providers(recipe: Recipe) -> tuple[list[str], dict[str, str]]:
    """(available providers in the recipe's order, {unavailable provider: why it is skipped})."""
    from edgekit.providers import require_provider

    available, skipped = [], {}
    for name in recipe.budget.providers:
        try:
            require_provider(name)
            available.append(name)
        except EdgekitError as e:
            skipped[name] = str(e)
    return available, skipped


def check_recipe(recipe: Recipe) -> None:
    """Problems a user can fix (data sources and columns, the teacher's files, providers), found before
    any expensive work and reported together, each at its file:line; `edgekit recipe check` runs exactly this."""
    from edgekit.data.tasks import eval_only_problems, test_file_problems
    from edgekit.providers import provider_name

    sources = [(f"tasks[{i}].data", task.kind, task.data) for i, task in enumerate(recipe.tasks)]
    sources += [(f"distill.unlabeled[{j}]", None, spec) for j, spec in enumerate(recipe.distill.unlabeled)]
    problems = _problems(sources, recipe.teacher, recipe.students)
    whole = [p for i, task in enumerate(recipe.tasks) for p in test_file_problems(task, f"tasks[{i}].split")]
    problems += [problem.partition(": ")[::2] for problem in whole + eval_only_problems(recipe)]
    known = []
    for i, name in enumerate(recipe.budget.providers):
        try:
            known.append(provider_name(name))
        except EdgekitError as e:
            problems.append((f"budget.providers[{i}]", str(e)))
    if known and not available_providers(recipe)[0]:
        problems.append(("budget.providers", (f"none of {', '.join(recipe.budget.providers)} is available in this "
                         "onnxruntime; add cpu to the list, or install the provider (see the README's GPU notes).")))
    if recipe.signing is not None:
        from edgekit.signing import key_problem

        if signing := key_problem(recipe.signing.key):
            problems.append(("signing.key", signing))
    if problems:
        raise RecipeError(f"recipe '{recipe.name}' cannot run ({len(problems)} problem(s)):\n"
                          + "\n".join(f"  {recipe.where(key)}: {key}: {message}" for key, message in problems))




def load_tasks(recipe: Recipe) -> list:
    """Every task's data, with the problems of all tasks reported together (bad rows, columns)."""
    from edgekit.data.tasks import load_task_data

    tasks, problems = [], []
    for i, spec in enumerate(recipe.tasks):
        try:
            tasks.append(load_task_data(spec))
        except DataError as e:
            problems.append(f"  {recipe.where(f'tasks[{i}].data')}: {e}")
    if problems:
        raise DataError(f"the data of recipe '{recipe.name}' cannot be used ({len(problems)} problem(s)):\n"
                        + "\n".join(problems))
    return tasks


def skipped_text(skipped: dict) -> str:
    """'3 bad rows: 2 empty text, 1 unknown label'."""
    counts = {reason: len(rows) for reason, rows in skipped.items()}
    return (f"{sum(counts.values())} bad row(s): "
            + ", ".join(f"{n} {reason}" for reason, n in counts.items()))


def examples(columns: dict) -> int:
    """How many examples a side (TaskData.train or .test) holds."""
    return len(next(iter(columns.values()), []))


def describe_tasks(tasks: list, run: Path, echo) -> None:
    """Say what loading kept and left out of each task (counts, duplicates, conflicting labels, bad rows),
    and write an image task's preprocessing record into the run folder: the input every model file takes."""
    for task in tasks:
        echo(f"  {task.name}: {task.spec.kind}, {examples(task.train)} train / {examples(task.test)} test examples "
             f"(test: {task.test_from})")
        for note in task.notes():  # duplicates, conflicting labels, classes without test examples
            echo(f"  {task.name}: {note}")
        if task.skipped:
            echo(f"  {task.name}: left out {skipped_text(task.skipped)} (data.bad_rows: skip)")
        if task.preprocessing:  # image tasks (bundles copy the record)
            from edgekit.preprocessing import describe, write_record

            echo(f"  {task.name}: {describe(task.preprocessing)}")
            write_record(run / "preprocessing.json", task.preprocessing)


def truncation(tasks: list, teacher, echo) -> dict:
    """{task: how many examples the teacher's max_length cuts, per side}: counted with the teacher's
    tokenizer, so once the teacher is loaded."""
    from edgekit.data.tasks import truncated_examples, truncation_note

    truncated = {t.name: truncated_examples(t, teacher.tokenizer, teacher.max_length) for t in tasks}
    for name, counts in truncated.items():
        if truncation_note(counts):
            echo(f"  {name}: {truncation_note(counts)}")
    return truncated


def sweep_budgets(recipe: Recipe, budgets: list[float | str] | None) -> list[float | str]:
    """The budgets a sweep runs at: `budgets` (milliseconds, or "x8": a speed-up over the teacher's fp32 file),
    else the recipe's budget.sweep; each checked, duplicates dropped."""
    from edgekit.recipe import budget_token

    budgets = list(dict.fromkeys(budgets or recipe.budget.sweep))
    if not budgets:
        raise RecipeError("no budgets to sweep: pass --budgets x4,x8,x16 (speed-ups over the teacher) or 2,4,8 "
                          "(milliseconds), or set budget.sweep in the recipe.")
    for token in budgets:
        try:
            budget_token(token)
        except ValueError as e:
            raise RecipeError(f"sweep: {e}.") from None
    return budgets

