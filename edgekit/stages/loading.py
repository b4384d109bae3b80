"""Stage 1: a recipe file becomes a validated Recipe, and its tasks' data is loaded.

load_recipe validates (profile merged in), `check_recipe` finds every problem a user can fix before
any expensive work (data sources and columns, the teacher's files, family, token limit and image size,
providers, the signing key), and load_tasks reads and splits each task's examples. `edgekit recipe check`
runs load_recipe and check_data: check_recipe's problems and every task's rows, reported together.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from edgekit.data.kinds import TASK_KINDS
from edgekit.errors import DataError, EdgekitError, RecipeError
from edgekit.modeling.models import resolve_teacher
from edgekit.recipe import (
    DataSpec,
    Recipe,
    SigningSpec,
    StudentSpace,
    TaskSpec,
    TeacherSpec,
    _line_of,
    _locate,
    validation_problems,
)


def recipe_from_dict(data, where: str = "recipe", text: str | None = None, folder: Path | None = None) -> Recipe:
    """Validate a parsed recipe; every problem is listed with its key path (and YAML line).
    A `target:` profile is resolved (relative paths from `folder`) and fills the keys the recipe leaves out."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping (name:, teacher:, tasks:, budget: ...), "
                          f"not a {type(data).__name__}.")
    profile, problems = None, []
    if isinstance(data.get("target"), str):
        from edgekit.runtime.profiles import apply_profile

        line = _line_of(text, ("target",)) if text else None
        try:
            data, profile = apply_profile(data, data["target"], folder, f"{where}:{line}" if line else where)
        except RecipeError as e:  # the rest is still checked, without the profile's settings
            problems.append(f"  {e}")
            data = {key: value for key, value in data.items() if key != "target"}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems += validation_problems(e, where, text)
        recipe = None
    if problems:
        # The parts that validate on their own are checked as a valid recipe's are, so one round of fixes is enough.
        problems += [f"  {_locate(where, text, key)}: {key}: {message}" for key, message in _part_problems(data)]
        raise RecipeError(f"{where} has {len(problems)} problem(s):\n" + "\n".join(problems))
    # What the recipe leaves out of the teacher's settings comes from its sentence-transformers folder.
    recipe = recipe.model_copy(update={"teacher": resolve_teacher(recipe.teacher)})
    recipe._profile_file = str(profile) if profile else None
    recipe._source = (where, text)
    return recipe


def load_recipe(path: str | Path, target: str | None = None) -> Recipe:
    """Read and validate a YAML recipe file; `target` replaces its deployment profile (`--target`)."""
    from edgekit.recipe import load_yaml, read_config_text
    from edgekit.trust.reading import shown

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
              students: StudentSpace | None = None, tasks: list[tuple[str, TaskSpec]] = (),
              providers: list[tuple[str, str]] = (), signing: SigningSpec | None = None) -> list[tuple[str, str]]:
    """(key path, message) of every problem found by the checks that need no other part: each data source (key,
    task kind or None for unlabeled text, spec), each task's test file (key, spec), the teacher's files, family,
    token limit and image size, each provider (key, name) and the signing key. The one preflight, run on a valid
    recipe and on the parts of an invalid one that validate; every check runs, whatever another found."""
    from edgekit.data.tasks import spec_problems, test_file_problems
    from edgekit.modeling.families import family_problem
    from edgekit.modeling.models import length_problem, teacher_problem

    found = []
    for key, kind, spec in sources:
        found += _guarded(f"{key}.source", _split, spec_problems, spec, kind, key)
    for key, task in tasks:
        found += _guarded(f"{key}.split", _split, test_file_problems, task, f"{key}.split")
    if teacher is not None:
        # Layer students need the teacher's family, read once its files are; its token limit and image size do not.
        found += _guarded("teacher.model", lambda: _one("teacher.model", teacher_problem(teacher)
                                                         or family_problem(teacher, students)))
        found += _guarded("teacher.max_length", lambda: _one("teacher.max_length", length_problem(teacher)))
        found += _guarded("teacher.model", lambda: _image_problems(teacher, tasks))
    found += _guarded("budget.providers", lambda: _provider_problems(providers))
    if signing is not None:
        from edgekit.trust.signing import key_problem

        found += _guarded("signing.key", lambda: _one("signing.key", key_problem(signing.key)))
    return found


def _guarded(key: str, check, *args) -> list[tuple[str, str]]:
    """check(*args)'s problems, or the error it raised as the problem at `key`: a check that cannot finish (a file
    that cannot be read) is one more problem, never the end of the others."""
    try:
        return check(*args)
    except EdgekitError as e:
        return [(key, str(e))]


def _split(check, *args) -> list[tuple[str, str]]:
    """check(*args)'s 'key.path: message' lines as (key path, message)."""
    return [problem.partition(": ")[::2] for problem in check(*args)]


def _one(key: str, problem: str | None) -> list[tuple[str, str]]:
    return [(key, problem)] if problem else []


def _image_problems(teacher: TeacherSpec, tasks: list[tuple[str, TaskSpec]]) -> list[tuple[str, str]]:
    """Image tasks whose stored images are not the (C, H, W) a Hugging Face image teacher's config.json says it
    takes, with the teacher stage's message. What only loading can tell (a torch module file's input, a hub id's
    config) is left to the run."""
    from edgekit.data.tasks import image_input_shape
    from edgekit.modeling.models import image_input_problem, teacher_image_input

    expected = teacher_image_input(teacher)
    if expected is None:
        return []
    return [(f"{key}.data.source", problem) for key, task in tasks
            if (problem := image_input_problem(task.name, image_input_shape(task.data), teacher.model, expected))]


def _provider_problems(providers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Provider names edgekit does not know (key, name), and a list none of whose providers this onnxruntime has."""
    from edgekit.runtime.providers import provider_name

    found, known = [], []
    for key, name in providers:
        try:
            known.append(provider_name(name))
        except EdgekitError as e:
            found.append((key, str(e)))
    if known and not _available([name for _, name in providers])[0]:
        found.append(("budget.providers", (f"none of {', '.join(name for _, name in providers)} is available in this "
                      "onnxruntime; add cpu to the list, or install the provider (docs/quantize-and-providers.md, GPUs).")))
    return found


def _valid(model, value):
    """`value` validated as `model` without the unknown keys (validation reports those), or None when it still fails:
    a part whose known keys are right is checked, whatever typo sits beside them."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        unknown = [err["loc"] for err in e.errors() if err["type"] == "extra_forbidden"]
        if not unknown or len(unknown) < len(e.errors()):
            return None
    try:
        return model.model_validate(_without(value, unknown))
    except ValidationError:
        return None


def _without(value, paths: list[tuple]):
    """A copy of nested mappings `value` with the key at each path left out."""
    if not isinstance(value, dict):
        return value
    here = {path[0] for path in paths if len(path) == 1}
    return {key: _without(item, [path[1:] for path in paths if len(path) > 1 and path[0] == key])
            for key, item in value.items() if key not in here}


def _part_problems(data: dict) -> list[tuple[str, str]]:
    """_problems of the parts of an invalid recipe (a parsed mapping) that validate on their own."""
    sources, tasks = [], []
    listed = data.get("tasks") if isinstance(data.get("tasks"), list) else []
    for i, task in enumerate(listed):
        if not isinstance(task, dict):
            continue
        spec = _valid(DataSpec, task.get("data"))
        if spec is not None and task.get("kind") in TASK_KINDS:
            sources.append((f"tasks.{i}.data", task["kind"], spec))
        if (whole := _valid(TaskSpec, task)) is not None:
            tasks.append((f"tasks.{i}", whole))
    distill = data.get("distill") if isinstance(data.get("distill"), dict) else {}
    unlabeled = distill.get("unlabeled") if isinstance(distill.get("unlabeled"), list) else []
    for j, value in enumerate(unlabeled):
        if (spec := _valid(DataSpec, value)) is not None:
            sources.append((f"distill.unlabeled.{j}", None, spec))
    students = data.get("students") if isinstance(data.get("students"), dict) else {}
    budget = data.get("budget") if isinstance(data.get("budget"), dict) else {}
    named = budget.get("providers") if isinstance(budget.get("providers"), list) else []
    providers = [(f"budget.providers.{i}", name) for i, name in enumerate(named) if isinstance(name, str)]
    signing = _valid(SigningSpec, data["signing"]) if data.get("signing") is not None else None
    return _problems(sources, _valid(TeacherSpec, data.get("teacher")), _valid(StudentSpace, students), tasks,
                     providers, signing)


def available_providers(recipe: Recipe) -> tuple[list[str], dict[str, str]]:
    """(available providers in the recipe's order, {unavailable provider: why it is skipped})."""
    return _available(recipe.budget.providers)


def _available(names: list[str]) -> tuple[list[str], dict[str, str]]:
    from edgekit.runtime.providers import require_provider

    available, skipped = [], {}
    for name in names:
        try:
            require_provider(name)
            available.append(name)
        except EdgekitError as e:
            skipped[name] = str(e)
    return available, skipped


def recipe_problems(recipe: Recipe) -> list[tuple[str, str]]:
    """(key path, message) of every problem a user can fix (data sources and columns, test files, the teacher's
    files, token limit and image size, providers, the signing key), found before any expensive work."""
    from edgekit.data.tasks import eval_only_problems

    sources = [(f"tasks[{i}].data", task.kind, task.data) for i, task in enumerate(recipe.tasks)]
    sources += [(f"distill.unlabeled[{j}]", None, spec) for j, spec in enumerate(recipe.distill.unlabeled)]
    tasks = [(f"tasks[{i}]", task) for i, task in enumerate(recipe.tasks)]
    providers = [(f"budget.providers[{i}]", name) for i, name in enumerate(recipe.budget.providers)]
    problems = _problems(sources, recipe.teacher, recipe.students, tasks, providers, recipe.signing)
    return problems + _guarded("tasks", _split, eval_only_problems, recipe)


def check_recipe(recipe: Recipe) -> None:
    """recipe_problems reported together, each at its file:line (RecipeError); the pipeline runs it before any
    work, `edgekit recipe check` with every task's rows (check_data)."""
    _refuse(recipe, recipe_problems(recipe))


def _refuse(recipe: Recipe, problems: list[tuple[str, str]]) -> None:
    if problems:
        raise RecipeError(f"recipe '{recipe.name}' cannot run ({len(problems)} problem(s)):\n"
                          + "\n".join(f"  {recipe.where(key)}: {key}: {message}" for key, message in problems))


def check_data(recipe: Recipe) -> list:
    """`edgekit recipe check`: check_recipe's problems and those of every row of the tasks whose files passed
    (bad rows, labels), reported together; the loaded tasks when there are none."""
    from edgekit.data.tasks import load_task_data

    problems = recipe_problems(recipe)
    failed = {key.split(".", 1)[0] for key, _ in problems}  # "tasks[0]": its files already fail
    tasks = []
    for i, spec in enumerate(recipe.tasks):
        if f"tasks[{i}]" in failed:
            continue
        try:
            tasks.append(load_task_data(spec))
        except DataError as e:
            problems.append((f"tasks[{i}].data", str(e)))
    _refuse(recipe, problems)
    return tasks


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
            from edgekit.data.preprocessing import describe, write_record

            echo(f"  {task.name}: {describe(task.preprocessing)}")
            write_record(run / "preprocessing.json", task.preprocessing)


def truncation(tasks: list, teacher, echo) -> dict:
    """{task: how many examples the teacher's max_length cuts, per side}: counted with the teacher's
    tokenizer, so once the teacher is loaded."""
    from edgekit.data.tasks import truncated_examples, truncation_note

    truncated = {t.name: truncated_examples(t, teacher.tokenizer, teacher.max_length) for t in tasks}
    for name, counts in truncated.items():
        if note := truncation_note(counts, teacher.token_limit):
            echo(f"  {name}: {note}")
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

