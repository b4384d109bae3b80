"""A recipe task's examples, loaded and split into train and test.

Sources: local files (.csv, .tsv, .jsonl, .parquet; .npz for images), `hf:NAME[:CONFIG]`
(Hugging Face datasets, online) and the offline built-ins of `edgekit.data.builtin`.

A split is a function of the data and the split settings alone: examples are
deduplicated first (the same text on both sides would inflate test scores; Rotten
Tomatoes has 18 such snippets under a plain random split), then permuted with the seed.
The test side is a random share of data.source (split.test_fraction), a file of the
user's own (split.test_file, with data.source the training data), or a Hugging Face
data set's named split. Nothing is dropped silently: exact duplicates, texts that
carry two labels (the majority label is kept; a tie goes to the label first in the
file), training rows also in the test file and classes without test examples are
counted on TaskData and printed by the run (TaskData.notes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data import builtin
from edgekit.data.files import (
    PYARROW_MISSING,
    image_file_problem,
    not_a_file_problem,
    read_header,
    read_lines,
    read_npz_images,
    read_table,
)
from edgekit.data.kinds import KINDS, TaskKind, kind_of
from edgekit.data.preprocessing import prepare_split
from edgekit.errors import DataError
from edgekit.names import IMAGE_TASK_SUFFIXES
from edgekit.recipe import DataSpec, Recipe, TaskSpec
from edgekit.runtime.feeds import token_lengths
from edgekit.trust.reading import shown

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
UNLABELED_SUFFIXES = (".txt", *TABLE_SUFFIXES)
# What a kind's examples hold is its TaskKind's (edgekit.data.kinds): `columns`, as in TaskData's docstring (for text
# kinds, the DataSpec field of the same name says which source column holds it), `text_columns`, `images`.
# built-in -> the task kind it serves (the kinds' `builtins`; None: unlabeled text only) and what it holds, for
# error messages
_SERVES = {name: kind.name for kind in KINDS.values() for name in kind.builtins}
BUILTIN_KIND = {name: _SERVES.get(name) for name in builtin.BUILTIN_NAMES}
_HOLDS = {"rotten_tomatoes": "labelled review snippets (classification)",
          "lee": "document pairs with human similarity scores (similarity)",
          "lee_background": "unlabeled texts (for distill.unlabeled)",
          "rotten_tomatoes_plots": "unlabeled movie plot sentences (for distill.unlabeled)",
          "digits": "labelled 8x8 images (image-classification)"}
UNLABELED_BUILTINS = tuple(builtin.UNLABELED_TEXTS)
CONFLICT_RULE = "the label most rows give it (a tie: the label of its first row in the file)"
CONFLICT_CASES = 10  # conflicting examples listed by name; the count covers all of them
LABEL_NOT_IN_TRAINING = "label not in the training data"


@dataclass
class TaskData:
    """One task's examples after deduplication and splitting.

    `train` and `test` map a column to its values, by task kind:
      classification:        {"text": list[str], "label": np.ndarray int64 (N,)}
      similarity:            {"text_a": list[str], "text_b": list[str], "score": np.ndarray float64 (N,)}
      retrieval:             {"query": list[str], "document": list[str]}  (row i's query matches document i)
      image-classification:  {"image": np.ndarray float32 (N, C, H, W), "label": np.ndarray int64 (N,)}
                             (the model input, made by edgekit.data.preprocessing: see `preprocessing`)
    """

    spec: TaskSpec
    train: dict
    test: dict
    labels: list[str] = field(default_factory=list)  # class names; label i is labels[i]
    digest: str = ""  # sha256 of the loaded examples and the split: a cache key for teacher outputs
    skipped: dict[str, list[int]] = field(default_factory=dict)  # bad rows dropped (bad_rows: skip): reason -> rows
    preprocessing: dict | None = None  # image tasks: how stored images became `image` (preprocessing.json)
    duplicates: int = 0  # rows dropped as exact copies (same input, same label/score/document) of a kept row
    # inputs given with different labels: {"count", "rows_dropped", "rule", "cases": [{"text", "labels", "kept"}]}
    conflicts: dict = field(default_factory=lambda: {"count": 0, "rows_dropped": 0, "rule": CONFLICT_RULE,
                                                     "cases": []})
    also_in_test: int = 0  # training rows left out because their input is in the (own or named) test split

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> TaskKind:
        """What the task is (edgekit.data.kinds): its columns, metrics, graph output, evaluation and gap report."""
        return kind_of(self.spec.kind)

    @property
    def output(self) -> str:
        """The graph output this task reads: its logits, or the embedding."""
        return self.kind.output(self.name)

    def train_inputs(self) -> list[str] | np.ndarray:
        """Every distinct training text (for distillation), in a stable order; image tasks: the image array."""
        if self.kind.images:
            return self.train["image"]
        return list(dict.fromkeys(self.texts("train")))

    def texts(self, side: str) -> list[str]:
        """Every text of the `side` ("train" or "test") the model reads, column by column; [] for images."""
        columns = getattr(self, side)
        return [text for column in self.kind.text_columns for text in columns[column]]

    @property
    def test_from(self) -> str:
        """Where the test examples come from, in words (the run log and report.json `tasks[].test_from`)."""
        split, source = self.spec.split, self.spec.data.source
        if split.eval_only:
            return f"all of {source} (eval_only)"
        if split.test_file is not None:
            return f"split.test_file {split.test_file}"
        if source.startswith("hf:"):
            return f"split '{split.test_split or 'test'}' of {source}"
        return f"a random {split.fraction:g} of {source} (seed {split.seed})"

    def classes_without(self, side: str) -> list[str]:
        """Class names with no example on `side` ("train" or "test"); [] for kinds without classes or sides
        without examples (an eval_only task has no training side to lack a class)."""
        columns = getattr(self, side)
        if not self.labels or "label" not in columns or not len(columns["label"]):
            return []
        present = set(np.asarray(columns["label"]).tolist())
        return [name for i, name in enumerate(self.labels) if i not in present]

    def notes(self) -> list[str]:
        """What loading did to the data beyond bad rows, one line each, for the run log (nothing silent)."""
        lines = []
        what = self.kind.what
        if self.duplicates:
            lines.append(f"dropped {self.duplicates} exact duplicate row(s) (same {what[0]} and {what[1]} as an earlier "
                         "row)")
        conflicts = self.conflicts
        if conflicts["count"]:
            shown = "; ".join(f"{_quote(case['text'])} -> {case['kept']} ("
                              + ", ".join(f"{name} x{n}" for name, n in case["labels"].items()) + ")"
                              for case in conflicts["cases"][:3])
            lines.append(f"{conflicts['count']} {what[0]}(s) come with different {what[1]}s: kept {CONFLICT_RULE}, "
                         f"dropping {conflicts['rows_dropped']} row(s); e.g. {shown}")
        if self.also_in_test:
            lines.append(f"left {self.also_in_test} training row(s) out whose {what[0]} is also a test example "
                         "(tested, not trained on)")
        missing = self.classes_without("test")
        if missing:
            lines.append(f"no test examples of class(es) {', '.join(missing)}: their accuracy is not measured")
        untrained = self.classes_without("train")
        if untrained:
            lines.append(f"no training examples of class(es) {', '.join(untrained)}: a head fitted on the training "
                         "rows never predicts them")
        return lines


def _quote(text) -> str:
    if text is None:
        return "(an image)"
    text = str(text)
    return repr(text if len(text) <= 60 else text[:59] + "…")


def truncated_examples(task: TaskData, tokenizer, max_length: int) -> dict | None:
    """How many examples of each side have a text longer than `max_length` tokens (the tokenizer's special
    tokens included, as the models read them), which truncation cuts: {"max_length", "train", "test"}.
    None for image tasks (no tokenizer)."""
    text_columns = task.kind.text_columns
    if tokenizer is None or not text_columns:
        return None
    counts = {"max_length": max_length}
    for side in ("train", "test"):
        columns = getattr(task, side)
        texts = list(dict.fromkeys(task.texts(side)))  # pairs and retrieval repeat texts: tokenize each once
        # One token past the limit is enough to tell: no text is tokenized further than that.
        cut = {text for text, n in zip(texts, token_lengths(tokenizer, texts, max_length + 1)) if n > max_length}
        rows = zip(*(columns[column] for column in text_columns))
        counts[side] = sum(any(text in cut for text in row) for row in rows)
    return counts


def truncation_note(counts: dict | None, limit: int | None = None) -> str | None:
    """The run log's line for truncated_examples' counts, or None when nothing is cut. `limit`, the most tokens the
    teacher takes (None: it does not say), decides the fix: raising teacher.max_length keeps more only below it."""
    if not counts or not (counts["train"] or counts["test"]):
        return None
    max_length = counts["max_length"]
    if limit is None:
        fix = "raise teacher.max_length to keep more"
    elif max_length < limit:
        fix = f"raise teacher.max_length, up to the {limit} tokens the teacher takes, to keep more"
    else:
        fix = (f"the teacher takes at most {limit} tokens: to keep more, split long texts (e.g. into passages) or "
               "use a teacher with a longer context")
    return (f"{counts['train']} train / {counts['test']} test example(s) have a text longer than teacher.max_length "
            f"{max_length} tokens, cut to it ({fix})")


def load_task_data(spec: TaskSpec) -> TaskData:
    """Load a task's data source, deduplicate it and split it (deterministic for a seed)."""
    problem = source_problem(spec.data.source, spec.kind)
    if problem:
        raise DataError(f"task '{spec.name}': data.source: {problem}")
    problems = test_file_problems(spec, "split")
    if problems:
        raise DataError(f"task '{spec.name}': " + "; ".join(problems))
    sides, skipped = _load_sides(spec)
    labels = []
    kind = kind_of(spec.kind)
    if kind.labelled:
        labels = spec.data.labels or _class_names([value for columns in sides.values() for value in columns["label"]])
        sides = {side: _encode_labels(columns, labels) for side, columns in sides.items()}
    train, test, found = _split(spec, sides, labels)
    preprocessing = None
    if kind.images:  # fit on the training side only, applied to both, once
        train, test, preprocessing = prepare_split(train, test, spec.data)
    return TaskData(spec=spec, train=train, test=test, labels=labels, digest=_digest(spec, train, test, labels),
                    skipped=skipped, preprocessing=preprocessing, **found)


def load_unlabeled(spec: DataSpec) -> list[str]:
    """The stripped, non-empty texts of an unlabeled source (file order, duplicates kept)."""
    problem = source_problem(spec.source, None)
    if problem:
        raise DataError(f"unlabeled data: {problem}")
    source, path = spec.source, Path(spec.source)
    if source.startswith("hf:"):
        # Unlabeled text comes from the training split only: test texts stay unseen.
        texts = _hf_columns(source, "train", {"text": spec.text}, "distill.unlabeled[].")["text"]
    elif source in builtin.UNLABELED_TEXTS:
        texts = builtin.UNLABELED_TEXTS[source]()
    elif path.suffix.lower() == ".txt":
        texts = read_lines(path)
    else:
        texts = _file_columns(path, {"text": spec.text}, "distill.unlabeled[].")["text"]
    texts = [text for text in map(_text, texts) if text]
    if not texts:
        raise DataError(f"unlabeled data '{source}' holds no non-empty text; point it at a file with text in "
                        f"column '{spec.text}' (or one text per line in a .txt file).")
    return texts


def eval_only_problems(recipe: Recipe) -> list[str]:
    """eval_only tasks the rest of the run could not serve, each prefixed with its key path.

    A classification task's head is fit (teacher.head: linear) or trained (finetune) on its training rows, and an
    image student distills on the task's own training images: eval_only leaves them nothing, and the run would fail
    inside scikit-learn or torch. Only a text teacher that brings its own classifier (head: none) can be evaluated
    on a classification task it never trains on, and then it distills on distill.unlabeled."""
    problems = []
    for i, task in enumerate(recipe.tasks):
        kind = kind_of(task.kind)
        if not task.split.eval_only or not kind.labelled:
            continue
        if kind.images:
            why = "an image student distills on the task's own training images"
        elif recipe.teacher.head != "none":
            why = (f"teacher.head: {recipe.teacher.head} {'fits' if recipe.teacher.head == 'linear' else 'trains'} "
                   "the task's head on its training rows")
        else:
            continue
        problems.append(f"tasks[{i}].split.eval_only: classification task '{task.name}' cannot be eval_only: {why}, "
                        "and eval_only leaves none. Drop eval_only (a random split.test_fraction of data.source is "
                        "held out), or give the evaluation rows their own file with split: {test_file: PATH} and "
                        "data.source the training rows")
    if not recipe.teacher.images and all(t.split.eval_only for t in recipe.tasks) \
            and not recipe.distill.unlabeled:
        problems.append("distill.unlabeled: every task is eval_only, so there is nothing to distill on: name an "
                        "unlabeled corpus in distill.unlabeled (e.g. [{source: lee_background}]), or give a task "
                        "training rows (drop its eval_only)")
    return problems


# --- which sources fit which kind --------------------------------------------------------------


def _suffixes(kind: str | None) -> tuple[str, ...]:
    if kind is None:
        return UNLABELED_SUFFIXES
    return IMAGE_TASK_SUFFIXES if kind_of(kind).images else TABLE_SUFFIXES


def _wrong_builtin(name: str, kind: str | None) -> str:
    if kind is None:
        return (f"built-in '{name}' holds {_HOLDS[name]}; unlabeled data are texts: use one of "
                f"{', '.join(UNLABELED_BUILTINS)} or a {'/'.join(UNLABELED_SUFFIXES)} file")
    fits = [other for other, serves in BUILTIN_KIND.items() if serves == kind]
    if fits:
        fix = f"use {' or '.join(fits)}, or a {'/'.join(_suffixes(kind))} file"
    else:
        fix = f"use a {'/'.join(_suffixes(kind))} file with columns {' and '.join(kind_of(kind).columns)}"
    return f"built-in '{name}' holds {_HOLDS[name]}, not {kind} data; {fix}"


def source_problem(source: str, kind: str | None) -> str | None:
    """Why `source` cannot serve a task of `kind` (None: unlabeled text), or None. Loads nothing."""
    try:
        return _source_problem(source, kind)
    except OSError as e:  # a path the file system refuses: too long, no permission
        return f"'{source[:80]}' cannot be read ({e.strerror}); fix the path or the file's permissions"


def _source_problem(source: str, kind: str | None) -> str | None:
    if source.startswith("hf:"):
        if not source[3:].partition(":")[0]:
            return "'hf:' needs a data set name: hf:NAME or hf:NAME:CONFIG"
        if kind is not None and kind_of(kind).images:
            return ("hf: image data sets are not supported; save the images as an .npz file "
                    "(arrays images and labels) and point the source at it")
        return None
    if source in BUILTIN_KIND:
        fits = source in UNLABELED_BUILTINS if kind is None else BUILTIN_KIND[source] == kind
        if not fits:
            return _wrong_builtin(source, kind)
        for key in builtin.BUILTIN_FILES[source]:
            try:
                builtin.package_file(key)
            except DataError as e:
                return str(e)
        return None
    path = Path(source)
    if not path.exists():
        if not path.suffix and len(path.parts) == 1:
            return (f"'{source}' is neither a file nor a built-in data set; use one of "
                    f"{', '.join(builtin.BUILTIN_NAMES)}, hf:NAME[:CONFIG] or the path of a file")
        return (f"file '{source}' does not exist (looked in {Path.cwd()}); fix the path, or use a built-in "
                f"({', '.join(builtin.BUILTIN_NAMES)})")
    if path.is_dir():
        return f"'{source}' is a folder; point to a {'/'.join(_suffixes(kind))} file in it"
    if problem := not_a_file_problem(path):  # a FIFO or a device: refused before anything opens it
        return problem
    if path.suffix.lower() not in _suffixes(kind):
        what = "unlabeled text" if kind is None else f"{kind} data"
        return (f"file '{source}': '{path.suffix or '(no suffix)'}' files cannot hold {what}; "
                f"use a {'/'.join(_suffixes(kind))} file")
    if path.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        return PYARROW_MISSING
    return None


def _wanted(spec: DataSpec, kind: str | None) -> dict[str, str]:
    """Column -> the source column that holds it (named by the DataSpec field of the same name)."""
    columns = ("text",) if kind is None else kind_of(kind).columns
    return {column: getattr(spec, column) for column in columns}


def spec_problems(spec: DataSpec, kind: str | None, key: str) -> list[str]:
    problem = source_problem(spec.source, kind)
    if problem:
        return [f"{key}.source: {problem}"]
    path = Path(spec.source)
    if spec.source.startswith("hf:") or spec.source in BUILTIN_KIND or path.suffix.lower() == ".txt":
        return []
    if path.suffix.lower() in IMAGE_TASK_SUFFIXES:  # array names, types and shapes, from the headers
        problem = image_file_problem(path, spec.image, spec.label, spec.layout)
        return [f"{key}.{problem[0]}: {problem[1]}"] if problem else []
    try:
        present = read_header(path)
    except DataError as e:
        return [f"{key}.source: {e}"]
    return [f"{key}.{column}: file '{path}' has no column '{name}' (it has: {', '.join(present) or 'none'}); "
            f"set {key}.{column} to one of them"
            for column, name in _wanted(spec, kind).items() if name not in present]


# The (C, H, W) of each built-in image set's examples (builtin.digits: 8x8 grey).
_BUILTIN_IMAGE_SHAPES = {"digits": (1, 8, 8)}


def image_input_shape(spec: DataSpec) -> tuple[int, ...] | None:
    """(C, H, W) of the images an image task's data gives its models, from an .npz file's headers (nothing is
    loaded) or a built-in's known shape; None where that takes loading, or the file has a problem spec_problems
    reports."""
    from edgekit.data.files import array_names, npz_headers
    from edgekit.data.preprocessing import channels_first, layout_of

    if spec.source in _BUILTIN_IMAGE_SHAPES:
        return _BUILTIN_IMAGE_SHAPES[spec.source]
    path = Path(spec.source)
    if (path.suffix.lower() not in IMAGE_TASK_SUFFIXES or source_problem(spec.source, "image-classification")
            or image_file_problem(path, spec.image, spec.label, spec.layout)):
        return None
    headers = npz_headers(path)
    names, _ = array_names(path, list(headers), spec.image, spec.label)
    shape = headers[names["image"]][0]
    layout, _ = layout_of(shape, spec.layout)
    # The layout rule itself, on an empty array of the stored shape: no second copy of it here.
    return channels_first(np.empty((0, *shape[1:])), layout).shape[1:]


def test_file_problems(task: TaskSpec, key: str) -> list[str]:
    """Problems with a task's split.test_file (`key` is the split's key path), each prefixed with its key:
    the cheap checks data.source gets (the path, its suffix, the columns in its header)."""
    problem = _test_file_problem(task)
    return [f"{key}.test_file: {problem}"] if problem else []


def _test_file_problem(task: TaskSpec) -> str | None:
    test_file, kind = task.split.test_file, task.kind
    if test_file is None:
        return None
    if test_file.startswith("hf:") or test_file in BUILTIN_KIND:
        return (f"'{test_file}' is a data set, not a file; split.test_file is the path of a "
                f"{'/'.join(_suffixes(kind))} file of your own test examples")
    if task.data.source in BUILTIN_KIND:
        return (f"built-in '{task.data.source}' is split by split.test_fraction; a test file goes with a "
                "data.source file of your own training examples: set data.source to one, or drop test_file")
    path = Path(test_file)
    try:
        if not path.exists():
            return (f"file '{test_file}' does not exist (looked in {Path.cwd()}); fix the path (a relative path is "
                    "from the folder edgekit runs in, as data.source is)")
    except OSError as e:
        return f"'{test_file[:80]}' cannot be read ({e.strerror}); fix the path or the file's permissions"
    problem = source_problem(test_file, kind)
    if problem:
        return problem
    if path.suffix.lower() in IMAGE_TASK_SUFFIXES:  # read with data.image, data.label and data.layout, as data.source is
        problem = image_file_problem(path, task.data.image, task.data.label, task.data.layout)
        return problem[1] if problem else None
    try:
        present = read_header(path)
    except DataError as e:
        return str(e)
    has = f"(it has: {', '.join(map(str, present)) or 'none'})"
    missing = {column: name for column, name in _wanted(task.data, kind).items() if name not in present}
    if not missing:
        return None
    needs = ", ".join(f"data.{column}: {name}" for column, name in missing.items())
    return (f"file '{test_file}' has no column {' and '.join(repr(n) for n in missing.values())} {has}; the test "
            f"file is read with the columns of data.source ({needs}): give it the same header")


# --- reading -----------------------------------------------------------------------------------


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _pick(names: list[str], data: dict[str, list], wanted: dict[str, str], where: str, scope: str) -> dict:
    """{column: values} for each wanted column, or a DataError listing the columns there are."""
    for column, name in wanted.items():
        if name not in names:
            raise DataError(f"{where}: no column '{name}' (it has: {', '.join(map(shown, names)) or 'none'}); "
                            f"set {scope}{column} to the column that holds the {column}.")
    return {column: data[name] for column, name in wanted.items()}


def _file_columns(path: Path, wanted: dict[str, str], scope: str) -> dict[str, list]:
    # Bytes that are not UTF-8 stay in the texts (as surrogates) so that they make bad rows, not a failed read.
    names, data = read_table(path, list(wanted.values()), keep_undecodable=True)
    if not names:  # not even a header: the column error below would only confuse
        raise DataError(f"{path} is empty; add a header and rows, or point the source at another file.")
    return _pick(names, data, wanted, str(path), scope)


def _hf_columns(source: str, split: str, wanted: dict[str, str], scope: str) -> dict[str, list]:
    """Columns of one split of a Hugging Face data set (class labels as their names)."""
    name, _, config = source[3:].partition(":")
    if importlib.util.find_spec("datasets") is None:
        raise DataError(f"data source '{source}' needs the datasets package: run `pip install datasets` "
                        "(or save the data as a local CSV/JSONL/Parquet file and point the source at it).")
    import datasets

    try:
        data = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 (offline, unknown name, config or split: all fixed by the user)
        raise DataError(f"cannot load Hugging Face data set '{name}'{f' (config {config})' if config else ''}, "
                        f"split '{split}': {e}. Check the name, the config (hf:NAME:CONFIG) and "
                        "split.train_split/split.test_split; on an offline machine save the data as a local "
                        "CSV/JSONL/Parquet file and set data.source to it.") from None
    names = list(data.column_names)
    columns = {}
    for column in wanted.values():
        if column in names:
            values, names_of = data[column], getattr(data.features[column], "names", None)
            # ClassLabel columns hold indices; -1 marks an unlabeled row (e.g. GLUE test splits).
            columns[column] = [names_of[v] if v >= 0 else None for v in values] if names_of else values
    return _pick(names, columns, wanted, source, scope)


# --- one task's examples ------------------------------------------------------------------------


def _npz_images(path: Path, data: DataSpec) -> dict:
    """Images as stored and labels of an .npz task file (edgekit.data.files)."""
    return read_npz_images(path, data.image, data.label, data.layout)


def _builtin_columns(name: str) -> dict:
    if name == "digits":
        images, labels = builtin.digits()
        return {"image": images, "label": list(labels)}
    rows = builtin.rotten_tomatoes() if name == "rotten_tomatoes" else builtin.lee_pairs()
    return {column: [row[column] for row in rows] for column in rows[0]}


def _missing_label(value) -> bool:
    return _text(value) == "" or (isinstance(value, float) and math.isnan(value))


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes a UTF-8 decode could not read, kept as surrogates
_ABSENT = object()  # a column the task kind does not have


def _row_problem(texts: list[str], label, score, labels: list[str] | None,
                 trained: set[str] | None = None) -> str | None:
    """Why one row cannot be an example (a bad row), or None. `trained`: the labels of the training side, for a
    test side read from its own file or split (a label only the test side has is a typo more often than a class,
    and no head trained on the other side can predict it)."""
    if any(_NOT_UTF8.search(text) for text in texts):
        return "not UTF-8"
    if not all(texts):
        return "empty text"
    if label is not _ABSENT:
        if _missing_label(label):
            return "no label"
        if labels and _text(label) not in labels:
            return "unknown label"
        if trained is not None and _text(label) not in trained:
            return LABEL_NOT_IN_TRAINING
    if score is not _ABSENT:
        try:
            if math.isnan(float(score)):
                return "score not a number"
        except (TypeError, ValueError):
            return "score not a number"
    return None


def _clean(spec: TaskSpec, columns: dict, trained: set[str] | None = None) -> tuple[dict, dict[str, list[int]]]:
    """(the usable examples, texts stripped; {reason: row numbers (1-based)} of the bad rows left out)."""
    kind = kind_of(spec.kind)
    n = len(columns[kind.columns[0]])
    texts = {column: [_text(value) for value in columns[column]] for column in kind.text_columns}
    bad: dict[str, list[int]] = {}
    keep = []
    for i in range(n):
        problem = _row_problem([values[i] for values in texts.values()],
                               columns["label"][i] if "label" in columns else _ABSENT,
                               columns["score"][i] if "score" in columns else _ABSENT, spec.data.labels, trained)
        if problem:
            bad.setdefault(problem, []).append(i + 1)
        else:
            keep.append(i)
    cleaned = {column: [values[i] for i in keep] for column, values in texts.items()}
    if kind.images:
        cleaned["image"] = columns["image"][keep]
    if "label" in columns:
        cleaned["label"] = [columns["label"][i] for i in keep]
    if "score" in columns:
        cleaned["score"] = np.array([float(columns["score"][i]) for i in keep], dtype=np.float64)
    return cleaned, bad


def _bad_rows(spec: TaskSpec, bad: dict[str, dict[str, list[int]]], where: str, all_bad: bool) -> dict[str, list]:
    """Apply data.bad_rows to the bad rows of every side ({side: {reason: rows}}): an error listing
    them, or {reason: rows} (rows prefixed with the side where there are several) to report as skipped."""
    merged = {}
    for side, reasons in bad.items():
        for reason, rows in reasons.items():
            merged.setdefault(reason, []).extend(rows if len(bad) == 1 else [f"{side}:{row}" for row in rows])
    # Skipping every row would only end in "no examples": say why the rows are bad instead.
    if not merged or (spec.data.bad_rows == "skip" and not all_bad):
        return merged
    found = "; ".join(f"{len(rows)} with {reason} (row {', '.join(map(str, rows[:5]))}"
                      f"{', ...' if len(rows) > 5 else ''})" for reason, rows in merged.items())
    hints = {"unknown label": " (the allowed ones are data.labels)",
             LABEL_NOT_IN_TRAINING: " (no training row has that label: fix the label, add training rows of that "
                                    "class, or list every class in data.labels)",
             "not UTF-8": " (re-save the file as UTF-8)",
             "no label": " (Hugging Face test splits are often unlabeled: set split.test_split: validation)"
             if where.startswith("hf:") else ""}
    hint = "".join(hints.get(reason, "") for reason in merged)
    fix = ("Fix them" if all_bad else "Fix or remove them, or set data.bad_rows: skip to leave them out (the run "
                                      "summary counts them)")
    raise DataError(f"task '{spec.name}': {where} has bad rows: {found}{hint}. Rows count from 1 after the header. "
                    f"{fix}.")


def _read_source(spec: TaskSpec, source: str) -> dict:
    """The columns of a built-in or a local file (data.source or split.test_file)."""
    if source in BUILTIN_KIND:
        return _builtin_columns(source)
    if Path(source).suffix.lower() in IMAGE_TASK_SUFFIXES:
        return _npz_images(Path(source), spec.data)
    return _file_columns(Path(source), _wanted(spec.data, spec.kind), "data.")


def _load_sides(spec: TaskSpec) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """({"all": columns} to split at random, or {"train": ..., "test": ...} for a test file of the user's own or
    a Hugging Face source's named splits; the bad rows left out, by reason)."""
    source, kind, split = spec.data.source, kind_of(spec.kind), spec.split
    if source.startswith("hf:"):
        wanted = _wanted(spec.data, kind.name)
        # eval_only needs only the test split; otherwise the data set's own split replaces ours.
        names = {"test": split.test_split or "test"}
        if not split.eval_only:
            names = {"train": split.train_split or "train", **names}
        raw = {side: _hf_columns(source, name, wanted, "data.") for side, name in names.items()}
        where = source
    else:
        raw = {"all": _read_source(spec, source)}
        where = f"built-in '{source}'" if source in BUILTIN_KIND else source
        names = {"all": "all"}
        if split.test_file is not None:
            raw = {"train": raw["all"], "test": _read_source(spec, split.test_file)}
            names = {"train": "train", "test": "test"}
            where = f"{source} (train) and {split.test_file} (test)"
    if kind.images and spec.data.labels:
        raw = _named_image_labels(spec, raw, where)
    cleaned, trained = {}, None
    for side, columns in raw.items():  # "train" comes before "test"
        cleaned[side] = _clean(spec, columns, trained if side == "test" else None)
        if side == "train" and "label" in columns and not spec.data.labels:
            trained = {_text(label) for label in cleaned[side][0]["label"]}
    all_bad = any(not len(columns[kind.columns[0]]) for columns, _ in cleaned.values())
    # Bad rows are named by side ("test:12"), a Hugging Face side by its split's name.
    skipped = _bad_rows(spec, {names[side]: bad for side, (_, bad) in cleaned.items()}, where, all_bad)
    sides = {side: columns for side, (columns, _) in cleaned.items()}
    if source.startswith("hf:") and split.eval_only:
        sides = {"all": sides["test"]}
    if not any(len(columns[kind.columns[0]]) for columns in sides.values()):
        raise DataError(f"task '{spec.name}': data source '{source}' holds no examples with non-empty "
                        f"{' and '.join(kind.text_columns or kind.input_columns)}; check data.source and its columns.")
    return sides, skipped


def _class_number(value) -> int | None:
    """An image label array's entry as a class number, or None (a name, a missing label, a fraction)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)  # (labels saved as floats: 3.0)
    return None


def _named_image_labels(spec: TaskSpec, raw: dict[str, dict], where: str) -> dict[str, dict]:
    """An image task's labels with data.labels: the label arrays hold class numbers, and data.labels names them
    (label i is labels[i]); each number becomes its name, so loading goes on as for a text task's named labels
    and the names reach the report, the gap slices and the bundle's labels.json in class-number order. A label
    array of names (strings) is matched by name, as a text task's column is.

    The names must be exactly one per class: a number without a name would silently become a bad row, and a
    name past the largest number would be a class the model is given but the data never has."""
    names = spec.data.labels
    numbers = {n for columns in raw.values() for value in columns["label"] if (n := _class_number(value)) is not None}
    if not numbers:
        return raw
    low, high = min(numbers), max(numbers)
    if low < 0 or high + 1 != len(names):
        found = f"class numbers {low}..{high}" + (f" ({high + 1} classes)" if low >= 0 else "")
        fix = ("class numbers start at 0: renumber the labels 0..N-1 and give data.labels N names" if low < 0 else
               f"give data.labels exactly {high + 1} names, the name of class i at position i")
        raise DataError(f"task '{spec.name}': data.labels names {len(names)} classes, but the labels in {where} are "
                        f"{found}; {fix} (or leave data.labels out to name the classes by their numbers).")
    return {side: {**columns, "label": [names[n] if (n := _class_number(value)) is not None else value
                                        for value in columns["label"]]}
            for side, columns in raw.items()}


def _class_names(values: list) -> list[str]:
    """Sorted distinct labels as strings; integer labels in numeric order (so "10" follows "9")."""
    names = sorted({_text(value) for value in values})
    if all(re.fullmatch(r"-?\d+", name) for name in names):
        names.sort(key=int)
    return names


def _encode_labels(columns: dict, labels: list[str]) -> dict:
    index = {name: i for i, name in enumerate(labels)}
    return {**columns, "label": np.array([index[_text(value)] for value in columns["label"]], dtype=np.int64)}


# --- splitting -----------------------------------------------------------------------------------


def _keys(kind: TaskKind, columns: dict) -> list:
    """What makes two examples the same (a duplicate must not land on both sides of a split): the input,
    an image by its bytes, a pair of texts as a tuple."""
    if kind.images:
        return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
                for image in columns[kind.input_columns[0]]]
    if len(kind.input_columns) > 1:
        return list(zip(*(columns[column] for column in kind.input_columns)))
    return list(columns[kind.input_columns[0]])


def _targets(kind: TaskKind, columns: dict) -> list:
    """What each example says about its input: its label, score or document (hashable)."""
    values = columns[kind.target_column]
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _shown(kind: TaskKind, columns: dict, i: int) -> str | None:
    """Example i's input as a person reads it (None for an image), cut to 160 characters."""
    if kind.images:
        return None
    text = " || ".join(columns[column][i] for column in kind.input_columns)
    return text if len(text) <= 160 else text[:159] + "…"


def _target_name(kind: TaskKind, value, labels: list[str]) -> str:
    if kind.labelled and labels:
        return labels[value]
    return f"{value:g}" if isinstance(value, float) else str(value)


def _dedupe(kind: TaskKind, columns: dict, labels: list[str], exclude=frozenset()) -> tuple[np.ndarray, dict]:
    """One row per distinct input (in file order), leaving out inputs in `exclude`; and what was dropped:
    {"duplicates", "conflicts" {"count", "rows_dropped", "rule", "cases"}, "also_in_test"}.

    An input given with different labels (scores, documents) keeps the label most of its rows give it, and
    on a tie the label of its first row: a deterministic choice that does not depend on the seed, and that
    a majority of annotators would make. The kept row is the first that carries the kept label."""
    keys, targets = _keys(kind, columns), _targets(kind, columns)
    rows: dict = {}
    excluded = 0
    for i, key in enumerate(keys):
        if key in exclude:
            excluded += 1
        else:
            rows.setdefault(key, []).append(i)
    keep, duplicates, dropped, cases, count = [], 0, 0, [], 0
    for members in rows.values():
        votes = Counter(targets[i] for i in members)  # insertion order: first row's label first
        kept = max(votes, key=votes.get)  # max keeps the first of equal counts: the tie rule
        keep.append(next(i for i in members if targets[i] == kept))
        duplicates += votes[kept] - 1
        if len(votes) > 1:
            count += 1
            dropped += len(members) - votes[kept]
            if len(cases) < CONFLICT_CASES:
                cases.append({"text": _shown(kind, columns, members[0]), "kept": _target_name(kind, kept, labels),
                              "labels": {_target_name(kind, value, labels): n for value, n in votes.items()}})
    conflicts = {"count": count, "rows_dropped": dropped, "rule": CONFLICT_RULE, "cases": cases}
    return np.array(sorted(keep), dtype=np.int64), {"duplicates": duplicates, "conflicts": conflicts,
                                                    "also_in_test": excluded}


def _take(columns: dict, index: np.ndarray) -> dict:
    return {name: values[index] if isinstance(values, np.ndarray) else [values[i] for i in index]
            for name, values in columns.items()}


def _merged(found: list[dict]) -> dict:
    """_dedupe's counts of the train and test sides as one."""
    cases = [case for f in found for case in f["conflicts"]["cases"]][:CONFLICT_CASES]
    return {"duplicates": sum(f["duplicates"] for f in found), "also_in_test": sum(f["also_in_test"] for f in found),
            "conflicts": {"count": sum(f["conflicts"]["count"] for f in found),
                          "rows_dropped": sum(f["conflicts"]["rows_dropped"] for f in found),
                          "rule": CONFLICT_RULE, "cases": cases}}


def _split(spec: TaskSpec, sides: dict[str, dict], labels: list[str]) -> tuple[dict, dict, dict]:
    """(train, test, what deduplication dropped: TaskData's duplicates, conflicts and also_in_test)."""
    kind, split = kind_of(spec.kind), spec.split
    rng = np.random.default_rng(split.seed)
    if "all" in sides:
        columns = sides["all"]
        kept, found = _dedupe(kind, columns, labels)
        order = rng.permutation(kept)
        n_test = len(order) if split.eval_only else round(split.fraction * len(order))
        if n_test == 0 or (n_test == len(order) and not split.eval_only):
            raise DataError(f"task '{spec.name}': {len(order)} distinct examples and split.test_fraction "
                            f"{split.fraction} leave one side empty; add examples, change test_fraction, "
                            "or set split.eval_only: true to evaluate on all of them.")
        train, test = (columns, order[n_test:]), (columns, order[:n_test])
    else:
        test_kept, test_found = _dedupe(kind, sides["test"], labels)
        train_kept, train_found = _dedupe(kind, sides["train"], labels, exclude=set(_keys(kind, sides["test"])))
        found = _merged([train_found, test_found])
        # Shuffled so that max_train/max_test take a random sample, not the head of a sorted split.
        test_order = rng.permutation(test_kept)
        train_order = rng.permutation(train_kept)
        if not len(train_order) or not len(test_order):
            if split.test_file is not None:
                raise DataError(f"task '{spec.name}': every training example of {spec.data.source} is also in "
                                f"split.test_file {split.test_file}, and an example is tested, not trained on; point "
                                "data.source at the training file and split.test_file at a different file.")
            raise DataError(f"task '{spec.name}': the {'training' if not len(train_order) else 'test'} split of "
                            f"{spec.data.source} holds no examples (after removing those also in the test split); "
                            "set split.train_split/split.test_split to other splits.")
        train, test = (sides["train"], train_order), (sides["test"], test_order)
    train, test = _take(train[0], train[1][:split.max_train]), _take(test[0], test[1][:split.max_test])
    if kind.labelled and not split.eval_only:
        present = np.unique(train["label"])
        if len(present) < 2:  # a head (or fine-tuning) learns nothing from one class; LogisticRegression refuses
            raise DataError(f"task '{spec.name}': the {len(train['label'])} training examples are all of class "
                            f"'{_target_name(kind, int(present[0]), labels)}'; a classifier needs examples of at least "
                            "two classes: add rows of the other classes"
                            + (" or raise split.max_train" if split.max_train else "") + ".")
    return train, test, found


def _digest(spec: TaskSpec, train: dict, test: dict, labels: list[str]) -> str:
    """sha256 of the split settings, the class names and every example (independent of the source's path)."""
    digest = hashlib.sha256()
    # The split as it acts, without the test file's path (the digest is of examples, not of where they were)
    # and with the default fraction spelled out, so digests (cache keys) stay those of earlier versions.
    split = spec.split.model_dump(mode="json", exclude={"test_file"}) | {"test_fraction": spec.split.fraction}
    settings = {"kind": spec.kind, "split": split, "labels": labels}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for side, columns in (("train", train), ("test", test)):
        for name in kind_of(spec.kind).columns:
            values = columns[name]
            digest.update(f"|{side}.{name}|".encode())
            if isinstance(values, np.ndarray):
                digest.update(f"{values.dtype.str}{values.shape}".encode())
                digest.update(np.ascontiguousarray(values).tobytes())
            else:
                digest.update(json.dumps(values, ensure_ascii=False).encode())
    return digest.hexdigest()
