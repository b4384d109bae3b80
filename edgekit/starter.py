"""`edgekit recipe init`: a starter recipe for a teacher and a data file, with comments.

The recipe is written from a text template (not yaml.dump) so every section keeps the
comment that says what it does and what to change. Its budget is relative (`speedup`):
a first recipe cannot know how many milliseconds the user's machine makes of the teacher,
but "4x faster than the teacher, measured in the same run" means the same everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgekit.data.kinds import KINDS as TASK_KINDS
from edgekit.data.kinds import kind_of
from edgekit.errors import DataError, ModelNotFound, RecipeError

KINDS = tuple(name for name, kind in TASK_KINDS.items() if not kind.images)  # recipe init writes text tasks
# kind -> (the DataSpec fields of its text columns, the field of its label/score column or None: a target that is
# itself a text, as retrieval's document, is one of the text columns)
FIELDS = {name: (kind.text_columns, None if kind.target_column in kind.text_columns else kind.target_column)
          for name, kind in TASK_KINDS.items() if name in KINDS}
_WHAT = {"text": "the texts", "label": "the labels", "text_a": "the first text of a pair",
         "text_b": "the second text of a pair", "score": "the gold similarity score",
         "query": "the queries", "document": "the document each query should find"}
_COMMENT_AT = 40  # the column the comments start at, as in the shipped recipes


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when it reads back as the same string, else double-quoted
    (a JSON string is a valid YAML one), so a path with `: ` or `#` in it stays a path."""
    import yaml

    if re.fullmatch(r"[A-Za-z0-9_./~-][A-Za-z0-9_./~ -]*", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def _line(text: str, comment: str = "") -> str:
    return f"{text:<{_COMMENT_AT - 1}} # {comment}" if comment else text


def _names(stem: str) -> tuple[str, str]:
    """(recipe name, task name) from the data file's stem, made to fit their patterns."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "recipe"
    task = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_") or "task"
    return name, task if task[0].isalpha() else f"task_{task}"


def _columns(kind: str, text_columns: tuple[str, ...], label_column: str | None) -> dict[str, str]:
    """{DataSpec field: source column} for a task of `kind`, from the --text-column/--label-column values."""
    text_fields, label_field = FIELDS[kind]
    if text_columns and len(text_columns) != len(text_fields):
        example = " ".join(f"--text-column {field}" for field in text_fields)
        raise RecipeError(f"a {kind} task reads {len(text_fields)} text column(s) ({', '.join(text_fields)}), and "
                          f"--text-column was given {len(text_columns)} time(s): pass it once per column, in that "
                          f"order, e.g. {example}.")
    if label_column is not None and label_field is None:
        raise RecipeError(f"a {kind} task has no label column (row i's query matches row i's document): "
                          "leave out --label-column.")
    columns = dict(zip(text_fields, text_columns or text_fields))
    if label_field is not None:
        columns[label_field] = label_column or label_field
    return columns


def _check_data(data: str, kind: str, columns: dict[str, str]) -> bool:
    """Raise a DataError when `data` cannot serve the task or lacks a named column.
    True for a file (whose columns the recipe names), False for a built-in or hf: source."""
    from edgekit.data.files import read_header
    from edgekit.data.tasks import BUILTIN_KIND, source_problem

    problem = source_problem(data, kind)
    if problem:
        raise DataError(f"--data: {problem}.")
    if data in BUILTIN_KIND or data.startswith("hf:"):
        return data not in BUILTIN_KIND  # a built-in has its own columns; hf: columns are checked when loaded
    present = read_header(Path(data))
    missing = [f"no column '{name}' for {_WHAT[field]} "
               f"({'--label-column' if field == FIELDS[kind][1] else '--text-column'})"
               for field, name in columns.items() if name not in present]
    if missing:
        raise DataError(f"--data {data} has {', '.join(missing)}; its columns are: "
                        f"{', '.join(map(str, present)) or 'none (is it empty?)'}. Name the ones that hold them "
                        "with those options.")
    return True


def starter_recipe(teacher: str, data: str, kind: str = "classification", text_columns: tuple[str, ...] = (),
                   label_column: str | None = None) -> tuple[str, str]:
    """(recipe name, YAML text) of a starter recipe: one task of `kind` on the data file, the shipped
    x86-server target, students of 1-3 teacher layers, a budget of 4x the teacher's fp32 speed.
    Checks the teacher's files (not a hub id: that needs the network) and the data's columns first."""
    from edgekit.modeling.models import teacher_problem
    from edgekit.recipe import TeacherSpec

    if kind not in KINDS:
        raise RecipeError(f"--kind {kind}: recipe init writes one of {', '.join(KINDS)} tasks.")
    columns = _columns(kind, text_columns, label_column)
    problem = teacher_problem(TeacherSpec(model=teacher))
    if problem:
        raise ModelNotFound(f"--teacher: {problem}")
    named_columns = _check_data(data, kind, columns)
    name, task = _names(Path(data).stem if not data.startswith("hf:") else data[3:].replace(":", "-"))
    head = "linear" if kind_of(kind).labelled else "none"
    head_comment = ("a logistic-regression head per classification task, fit on its embeddings" if head == "linear"
                    else "the embeddings themselves are compared: no head")
    data_lines = [_line(f"      source: {_scalar(data)}", "relative paths: from the folder edgekit runs in")]
    if named_columns:
        data_lines += [_line(f"      {field}: {_scalar(column)}", f"the column of {_WHAT[field]}")
                       for field, column in columns.items()]
    lines = [
        "# A starter recipe from `edgekit recipe init`: a smaller student of the teacher below that",
        f"# keeps its {kind} quality and runs at least 4x faster. Check it with `edgekit recipe check`;",
        "# `edgekit recipe schema` lists every key, its default and its meaning.",
        _line(f"name: {name}", f"names the run folder: runs/{name}"),
        "",
        "# The deployment profile that ships with edgekit (also: arm64-phone, cuda-gpu, or a YAML path): the",
        "# providers and threads every file is timed with, the quantized variants worth making for that",
        "# hardware and the export settings. Any key this recipe sets itself wins over the profile's.",
        "target: x86-server",
        "",
        "# The model to make smaller: a local folder, an installed package's folder or a Hugging Face hub id.",
        "teacher:",
        f"  model: {_scalar(teacher)}",
        _line("  kind: sentence-encoder", "one pooled embedding per text; sequence-classifier: a model with a head"),
        _line(f"  head: {head}", head_comment),
        "",
        "# What the student must stay good at: scored on held-out rows the student never trains on.",
        "tasks:",
        f"  - name: {task}",
        f"    kind: {kind}",
        "    data:",
        *data_lines,
        _line("    split: {test_fraction: 0.2, seed: 0}", "a fifth of the rows, drawn with the seed, are the test set"),
        _line(f"    metric: {kind_of(kind).metrics[0]}", "what `quality` means in the report"),
        "",
        "# The candidate students, derived from the teacher: each keeps this many of its layers, initialized",
        "# from the teacher's (every other layer first); the ones that can meet the budget are distilled.",
        "students:",
        "  layers: [1, 2, 3]",
        "",
        "# The latency budget, relative to the teacher: a file fits when its p95 latency (batch 1, 128 tokens)",
        "# is 4x below the teacher's fp32 file, both timed in the same run on this machine. For a fixed",
        "# device budget write `ms: 5` (milliseconds) instead of `speedup: 4`: give exactly one of the two.",
        "# min_retention: a file that keeps less than this % of the teacher's metric does not ship.",
        "budget: {speedup: 4, percentile: p95, batch: 1, seq_len: 128, min_retention: 95}",
        "",
        "# distill: (losses, epochs, extra unlabeled texts), quantize: and export: keep their defaults and",
        "# the target's settings; see `edgekit recipe schema` to change them.",
    ]
    return name, "\n".join(lines) + "\n"


def write_starter(path: Path, text: str, force: bool = False) -> None:
    """Write the recipe file, never over an existing one unless `force` (a recipe is hand-edited work)."""
    from edgekit.errors import OutputExists
    from edgekit.trust.atomic import write_text_atomic

    if path.exists() and not force:
        raise OutputExists(f"'{path}' already exists. Pass --force to replace it, or choose another file with -o.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)  # a full recipe or none, even when the disk fills up half way
