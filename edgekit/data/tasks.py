"""A recipe task's examples, loaded and split into train and test.

Sources: local files (.csv, .tsv, .jsonl, .parquet; .npz for images), `hf:NAME[:CONFIG]`
(Hugging Face datasets, online) and the offline built-ins of `edgekit.data.builtin`.

A split is a function of the data and the split settings alone: examples are
deduplicated first (the same text on both sides would inflate test scores; Rotten
Tomatoes has 18 such snippets under a plain random split), then permuted with the seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data import builtin
from edgekit.data.files import PYARROW_MISSING, open_npz, read_header, read_lines, read_table
from edgekit.errors import DataError
from edgekit.recipe import DataSpec, Recipe, TaskSpec

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
IMAGE_SUFFIXES = (".npz",)
UNLABELED_SUFFIXES = (".txt", *TABLE_SUFFIXES)
# The columns of each kind, as in TaskData's docstring. For text kinds, the DataSpec field of
# the same name says which source column holds it.
COLUMNS = {
    "classification": ("text", "label"),
    "similarity": ("text_a", "text_b", "score"),
    "retrieval": ("query", "document"),
    "image-classification": ("image", "label"),
}
TEXT_COLUMNS = {"classification": ("text",), "similarity": ("text_a", "text_b"), "retrieval": ("query", "document")}
# built-in -> the task kind it serves (None: unlabeled text only) and what it holds, for error messages
BUILTIN_KIND = {"rotten_tomatoes": "classification", "lee": "similarity", "lee_background": None,
                "rotten_tomatoes_plots": None, "digits": "image-classification"}
_HOLDS = {"rotten_tomatoes": "labelled review snippets (classification)",
          "lee": "document pairs with human similarity scores (similarity)",
          "lee_background": "unlabeled texts (for distill.unlabeled)",
          "rotten_tomatoes_plots": "unlabeled movie plot sentences (for distill.unlabeled)",
          "digits": "labelled 8x8 images (image-classification)"}
UNLABELED_BUILTINS = tuple(builtin.UNLABELED_TEXTS)


# The graph outputs edgekit's networks export and tasks read: a sentence encoder's pooled
# embedding, and each classification task's logits.
EMBEDDING = "embedding"


def logits_name(task_name: str) -> str:
    return f"{task_name}_logits"


@dataclass
class TaskData:
    """One task's examples after deduplication and splitting.

    `train` and `test` map a column to its values, by task kind:
      classification:        {"text": list[str], "label": np.ndarray int64 (N,)}
      similarity:            {"text_a": list[str], "text_b": list[str], "score": np.ndarray float64 (N,)}
      retrieval:             {"query": list[str], "document": list[str]}  (row i's query matches document i)
      image-classification:  {"image": np.ndarray float32 (N, C, H, W), "label": np.ndarray int64 (N,)}
    """

    spec: TaskSpec
    train: dict
    test: dict
    labels: list[str] = field(default_factory=list)  # class names; label i is labels[i]
    digest: str = ""  # sha256 of the loaded examples and the split: a cache key for teacher outputs
    skipped: dict[str, list[int]] = field(default_factory=dict)  # bad rows dropped (bad_rows: skip): reason -> rows

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def output(self) -> str:
        """The graph output this task reads: its logits, or the embedding."""
        return logits_name(self.name) if self.spec.kind in ("classification", "image-classification") else EMBEDDING

    def train_inputs(self) -> list[str] | np.ndarray:
        """Every distinct training text (for distillation), in a stable order; image tasks: the image array."""
        if self.spec.kind == "image-classification":
            return self.train["image"]
        return list(dict.fromkeys(self.texts("train")))

    def texts(self, side: str) -> list[str]:
        """Every text of the `side` ("train" or "test") the model reads, column by column; [] for images."""
        columns = getattr(self, side)
        return [text for column in TEXT_COLUMNS.get(self.spec.kind, ()) for text in columns[column]]


def load_task_data(spec: TaskSpec) -> TaskData:
    """Load a task's data source, deduplicate it and split it (deterministic for a seed)."""
    problem = source_problem(spec.data.source, spec.kind)
    if problem:
        raise DataError(f"task '{spec.name}': data.source: {problem}")
    sides, skipped = _load_sides(spec)
    labels = []
    if "label" in COLUMNS[spec.kind]:
        labels = spec.data.labels or _class_names([value for columns in sides.values() for value in columns["label"]])
        sides = {side: _encode_labels(columns, labels) for side, columns in sides.items()}
    train, test = _split(spec, sides)
    return TaskData(spec=spec, train=train, test=test, labels=labels, digest=_digest(spec, train, test, labels),
                    skipped=skipped)


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


def check_task_sources(recipe: Recipe) -> list[str]:
    """Problems with every data source of a recipe, each prefixed with its key path; [] when all look usable.

    Cheap checks only (paths, suffixes, installed packages, file headers): nothing is loaded in full,
    and `hf:` sources are accepted as they are (checking them needs the network).
    """
    problems = []
    for i, task in enumerate(recipe.tasks):
        problems += spec_problems(task.data, task.kind, f"tasks[{i}].data")
    for j, spec in enumerate(recipe.distill.unlabeled):
        problems += spec_problems(spec, None, f"distill.unlabeled[{j}]")
    return problems


# --- which sources fit which kind --------------------------------------------------------------


def _suffixes(kind: str | None) -> tuple[str, ...]:
    if kind is None:
        return UNLABELED_SUFFIXES
    return IMAGE_SUFFIXES if kind == "image-classification" else TABLE_SUFFIXES


def _wrong_builtin(name: str, kind: str | None) -> str:
    if kind is None:
        return (f"built-in '{name}' holds {_HOLDS[name]}; unlabeled data are texts: use one of "
                f"{', '.join(UNLABELED_BUILTINS)} or a {'/'.join(UNLABELED_SUFFIXES)} file")
    fits = [other for other, serves in BUILTIN_KIND.items() if serves == kind]
    if fits:
        fix = f"use {' or '.join(fits)}, or a {'/'.join(_suffixes(kind))} file"
    else:
        fix = f"use a {'/'.join(_suffixes(kind))} file with columns {' and '.join(COLUMNS[kind])}"
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
        if kind == "image-classification":
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
    if not path.is_file():
        return f"'{source}' is a folder; point to a {'/'.join(_suffixes(kind))} file in it"
    if path.suffix.lower() not in _suffixes(kind):
        what = "unlabeled text" if kind is None else f"{kind} data"
        return (f"file '{source}': '{path.suffix or '(no suffix)'}' files cannot hold {what}; "
                f"use a {'/'.join(_suffixes(kind))} file")
    if path.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        return PYARROW_MISSING
    return None


def _wanted(spec: DataSpec, kind: str | None) -> dict[str, str]:
    """Column -> the source column that holds it (named by the DataSpec field of the same name)."""
    columns = ("text",) if kind is None else COLUMNS[kind]
    return {column: getattr(spec, column) for column in columns}


def spec_problems(spec: DataSpec, kind: str | None, key: str) -> list[str]:
    problem = source_problem(spec.source, kind)
    if problem:
        return [f"{key}.source: {problem}"]
    path = Path(spec.source)
    if spec.source.startswith("hf:") or spec.source in BUILTIN_KIND or path.suffix.lower() == ".txt":
        return []
    try:
        present = _npz_arrays(path) if path.suffix.lower() == ".npz" else read_header(path)
    except DataError as e:
        return [f"{key}.source: {e}"]
    if path.suffix.lower() == ".npz":
        missing = " and ".join(name for name in ("images", "labels") if name not in present)
        if not missing:
            return []
        problem = (f"{key}.source: file '{path}' has no array {missing} (it has: {', '.join(present) or 'none'}); "
                   "save images (N, C, H, W) as 'images' and their labels as 'labels'")
        return [problem]
    return [f"{key}.{column}: file '{path}' has no column '{name}' (it has: {', '.join(present) or 'none'}); "
            f"set {key}.{column} to one of them"
            for column, name in _wanted(spec, kind).items() if name not in present]


# --- reading -----------------------------------------------------------------------------------


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _pick(names: list[str], data: dict[str, list], wanted: dict[str, str], where: str, scope: str) -> dict:
    """{column: values} for each wanted column, or a DataError listing the columns there are."""
    for column, name in wanted.items():
        if name not in names:
            raise DataError(f"{where}: no column '{name}' (it has: {', '.join(map(str, names)) or 'none'}); "
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
        raise DataError(f"data source '{source}' needs the datasets package: run `pip install 'datasets<5'` "
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


def _npz_arrays(path: Path) -> list[str]:
    with open_npz(path) as arrays:
        return list(arrays.files)


def _npz_images(path: Path) -> dict:
    with open_npz(path) as arrays:
        missing = [name for name in ("images", "labels") if name not in arrays.files]
        if missing:
            raise DataError(f"{path}: no array {' or '.join(missing)} (it has: {', '.join(arrays.files) or 'none'}); "
                            "save images (N, C, H, W) as 'images' and their labels as 'labels'.")
        try:
            images, labels = arrays["images"], arrays["labels"]
        except ValueError as e:  # object arrays need pickle, which could run code
            raise DataError(f"{path}: {e}; save plain numeric images and numeric or string labels.") from None
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[:, None]
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{path}: images {images.shape} and labels {labels.shape} do not fit; "
                        "save images as (N, C, H, W) and labels as (N,).")
    return {"image": images.astype(np.float32), "label": list(labels)}


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


def _row_problem(texts: list[str], label, score, labels: list[str] | None) -> str | None:
    """Why one row cannot be an example (a bad row), or None."""
    if any(_NOT_UTF8.search(text) for text in texts):
        return "not UTF-8"
    if not all(texts):
        return "empty text"
    if label is not _ABSENT:
        if _missing_label(label):
            return "no label"
        if labels and _text(label) not in labels:
            return "unknown label"
    if score is not _ABSENT:
        try:
            if math.isnan(float(score)):
                return "score not a number"
        except (TypeError, ValueError):
            return "score not a number"
    return None


def _clean(spec: TaskSpec, columns: dict) -> tuple[dict, dict[str, list[int]]]:
    """(the usable examples, texts stripped; {reason: row numbers (1-based)} of the bad rows left out)."""
    kind = spec.kind
    n = len(columns[COLUMNS[kind][0]])
    texts = {column: [_text(value) for value in columns[column]] for column in TEXT_COLUMNS.get(kind, ())}
    bad: dict[str, list[int]] = {}
    keep = []
    for i in range(n):
        problem = _row_problem([values[i] for values in texts.values()],
                               columns["label"][i] if "label" in columns else _ABSENT,
                               columns["score"][i] if "score" in columns else _ABSENT, spec.data.labels)
        if problem:
            bad.setdefault(problem, []).append(i + 1)
        else:
            keep.append(i)
    cleaned = {column: [values[i] for i in keep] for column, values in texts.items()}
    if kind == "image-classification":
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
             "not UTF-8": " (re-save the file as UTF-8)",
             "no label": " (Hugging Face test splits are often unlabeled: set split.test_split: validation)"
             if where.startswith("hf:") else ""}
    hint = "".join(hints.get(reason, "") for reason in merged)
    fix = ("Fix them" if all_bad else "Fix or remove them, or set data.bad_rows: skip to leave them out (the run "
                                      "summary counts them)")
    raise DataError(f"task '{spec.name}': {where} has bad rows: {found}{hint}. Rows count from 1 after the header. "
                    f"{fix}.")


def _load_sides(spec: TaskSpec) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """({"all": columns}, or {"train": ..., "test": ...} for a Hugging Face source with named splits;
    the bad rows left out, by reason)."""
    source, kind, scope = spec.data.source, spec.kind, "data."
    if source.startswith("hf:"):
        wanted = _wanted(spec.data, kind)
        # eval_only needs only the test split; otherwise the data set's own split replaces ours.
        names = {"test": spec.split.test_split or "test"}
        if not spec.split.eval_only:
            names = {"train": spec.split.train_split or "train", **names}
        raw = {split: _hf_columns(source, split, wanted, scope) for split in names.values()}
        where = source
    elif source in BUILTIN_KIND:
        raw, where = {"all": _builtin_columns(source)}, f"built-in '{source}'"
    elif Path(source).suffix.lower() == ".npz":
        raw, where = {"all": _npz_images(Path(source))}, source
    else:
        raw, where = {"all": _file_columns(Path(source), _wanted(spec.data, kind), scope)}, source
    cleaned = {split: _clean(spec, columns) for split, columns in raw.items()}
    all_bad = any(not len(columns[COLUMNS[kind][0]]) for columns, _ in cleaned.values())
    skipped = _bad_rows(spec, {split: bad for split, (_, bad) in cleaned.items()}, where, all_bad)
    sides = {split: columns for split, (columns, _) in cleaned.items()}
    if source.startswith("hf:"):
        sides = {side: sides[split] for side, split in names.items()}
        if spec.split.eval_only:
            sides = {"all": sides["test"]}
    if not any(len(columns[COLUMNS[kind][0]]) for columns in sides.values()):
        raise DataError(f"task '{spec.name}': data source '{source}' holds no examples with non-empty "
                        f"{' and '.join(TEXT_COLUMNS.get(kind, ('image',)))}; check data.source and its columns.")
    return sides, skipped


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


def _keys(kind: str, columns: dict) -> list:
    """What makes two examples the same (a duplicate must not land on both sides of a split)."""
    if kind == "image-classification":
        return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
                for image in columns["image"]]
    if kind == "similarity":
        return list(zip(columns["text_a"], columns["text_b"]))
    return list(columns[TEXT_COLUMNS[kind][0]])


def _first_of_each(keys: list, exclude=frozenset()) -> np.ndarray:
    """Indices of the first occurrence of each key not in `exclude`."""
    seen, keep = set(exclude), []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def _take(columns: dict, index: np.ndarray) -> dict:
    return {name: values[index] if isinstance(values, np.ndarray) else [values[i] for i in index]
            for name, values in columns.items()}


def _split(spec: TaskSpec, sides: dict[str, dict]) -> tuple[dict, dict]:
    kind, split = spec.kind, spec.split
    rng = np.random.default_rng(split.seed)
    if "all" in sides:
        columns = sides["all"]
        order = rng.permutation(_first_of_each(_keys(kind, columns)))
        n_test = len(order) if split.eval_only else round(split.test_fraction * len(order))
        if n_test == 0 or (n_test == len(order) and not split.eval_only):
            raise DataError(f"task '{spec.name}': {len(order)} distinct examples and split.test_fraction "
                            f"{split.test_fraction} leave one side empty; add examples, change test_fraction, "
                            "or set split.eval_only: true to evaluate on all of them.")
        train, test = (columns, order[n_test:]), (columns, order[:n_test])
    else:
        test_keys = _keys(kind, sides["test"])
        # Shuffled so that max_train/max_test take a random sample, not the head of a sorted split.
        test_order = rng.permutation(_first_of_each(test_keys))
        train_order = rng.permutation(_first_of_each(_keys(kind, sides["train"]), exclude=set(test_keys)))
        if not len(train_order) or not len(test_order):
            raise DataError(f"task '{spec.name}': the {'training' if not len(train_order) else 'test'} split of "
                            f"{spec.data.source} holds no examples (after removing those also in the test split); "
                            "set split.train_split/split.test_split to other splits.")
        train, test = (sides["train"], train_order), (sides["test"], test_order)
    return _take(train[0], train[1][:split.max_train]), _take(test[0], test[1][:split.max_test])


def _digest(spec: TaskSpec, train: dict, test: dict, labels: list[str]) -> str:
    """sha256 of the split settings, the class names and every example (independent of the source's path)."""
    digest = hashlib.sha256()
    settings = {"kind": spec.kind, "split": spec.split.model_dump(mode="json"), "labels": labels}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for side, columns in (("train", train), ("test", test)):
        for name in COLUMNS[spec.kind]:
            values = columns[name]
            digest.update(f"|{side}.{name}|".encode())
            if isinstance(values, np.ndarray):
                digest.update(f"{values.dtype.str}{values.shape}".encode())
                digest.update(np.ascontiguousarray(values).tobytes())
            else:
                digest.update(json.dumps(values, ensure_ascii=False).encode())
    return digest.hexdigest()
