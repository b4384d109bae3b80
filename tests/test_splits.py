"""A task's own test file (split.test_file): checked like data.source by `recipe check`, used as the test
split by the run (metrics on its rows), and listed in the provenance; split keys that do not apply to the
source or to each other, and eval_only classification tasks, are errors before any work."""

import random

import pytest
import yaml

from edgekit.data.tasks import LABEL_NOT_IN_TRAINING, load_task_data
from edgekit.errors import DataError
from edgekit.recipe import DataSpec, Recipe, TaskSpec
from edgekit.testing import tiny_recipe
from edgekit.trust.provenance import sha256_file

LABELS = ("neg", "neu", "pos")
WORDS = ("the", "a", "of", "it", "movie", "one", "this", "that", "with", "as")


CUES = {"neg": "worst hate", "neu": "story film", "pos": "best love"}  # a teacher that learns: files can ship


def _rows(n, start=0, seed=0, labels=LABELS):
    rng = random.Random(seed)
    labelled = [labels[i % len(labels)] for i in range(n)]
    return [(f"review {start + i} " + " ".join(rng.choice(WORDS) for _ in range(3)) + f" {CUES[label]}", label)
            for i, label in enumerate(labelled)]


def _tsv(path, rows, header=("text", "label")):
    path.write_text("\t".join(header) + "\n" + "".join(f"{text}\t{label}\n" for text, label in rows),
                    encoding="utf-8")
    return path


def _recipe_file(tmp_path, tiny_bert, task: dict, *extra_tasks: dict, name="recipe.yaml"):
    """The tiny recipe with these tasks, as a YAML file (not validated here: some are meant to fail)."""
    data = tiny_recipe(tiny_bert).model_dump(mode="json") | {"tasks": [task, *extra_tasks]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    """A review-rating task of 3 classes with its own train (90 rows) and test (30 rows) files."""
    return _tsv(tmp_path / "reviews_train.tsv", _rows(90)), _tsv(tmp_path / "reviews_test.tsv", _rows(30, 1000, 1))


def _reviews(train, test=None, **split):
    return {"name": "reviews", "kind": "classification", "data": {"source": str(train)},
            "split": {**({"test_file": str(test)} if test else {}), **split}}


def test_recipe_check_accepts_an_own_test_file(run_cli, tiny_bert, tmp_path, files):
    # setup
    path = _recipe_file(tmp_path, tiny_bert, _reviews(*files))
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 0, result.output
    assert "ok." in result.output


@pytest.mark.parametrize("change, expected", [
    # the recipe: hf split names on a file source pass no more, and say which key to use
    (lambda train, test: _reviews(train, train_split=train.name, test_split=test.name),
     ["split.train_split names a split of an hf: data set", "split: {test_file: PATH}"]),
    (lambda train, test: _reviews(train, test.with_name("missing.tsv")),
     ["split.test_file: file", "missing.tsv' does not exist"]),
    (lambda train, test: _reviews(train, test, test_fraction=0.3),
     ["with split.test_file the test examples are that file: remove test_fraction"]),
    (lambda train, test: _reviews(train, test, eval_only=True), ["test_file and split.eval_only: true do not go"]),
    (lambda train, test: _reviews(train, eval_only=True, max_train=10),
     ["split.max_train does not apply with eval_only: true"]),
    (lambda train, test: _reviews(train, eval_only=True, test_fraction=0.5),
     ["split.test_fraction does not apply with eval_only: true"]),
    (lambda train, test: _reviews(train, "rotten_tomatoes"), ["'rotten_tomatoes' is a data set, not a file"]),
    (lambda train, test: _reviews("rotten_tomatoes", test),
     ["built-in 'rotten_tomatoes' is split by split.test_fraction"]),
    (lambda train, test: _reviews("hf:imdb", test), ["split.test_file takes a local file; hf:imdb"]),
    (lambda train, test: _reviews("hf:imdb", test_fraction=0.1), ["split.test_fraction does not apply to hf:imdb"]),
], ids=["hf-split-names-on-a-file", "missing-test-file", "fraction-and-file", "eval-only-and-file",
        "max-train-on-eval-only", "fraction-on-eval-only", "builtin-as-test-file", "test-file-on-builtin",
        "test-file-on-hf", "fraction-on-hf"])
def test_split_keys_that_do_not_apply_are_errors_naming_the_fix(change, expected, run_cli, tiny_bert, tmp_path,
                                                                files):
    # setup
    task = change(*files)
    path = _recipe_file(tmp_path, tiny_bert, task)
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for phrase in expected:
        assert phrase in result.output, (phrase, result.output)


def test_test_file_columns_are_checked_like_the_sources(run_cli, tiny_bert, tmp_path, files):
    # setup: the test file names its text column differently
    train, _ = files
    test = _tsv(tmp_path / "other.tsv", _rows(10), header=("review", "label"))
    path = _recipe_file(tmp_path, tiny_bert, _reviews(train, test))
    # execute
    result = run_cli("recipe", "check", path)
    # assert: the key, the line and the columns there are
    assert result.exit_code == 1, result.output
    assert "tasks[0].split.test_file: file" in result.output and "has no column 'text' (it has: review, label)" \
        in result.output
    assert "recipe.yaml:" in result.output


def test_a_test_label_no_training_row_has_is_a_bad_row(run_cli, tiny_bert, tmp_path, files):
    # setup: two test rows carry a label ('positive') that no training row has: a typo more often than a class
    train, _ = files
    test = _tsv(tmp_path / "typo.tsv", [*_rows(10, 500), ("a fine film", "positive"), ("a dull film", "positive")])
    skip = _recipe_file(tmp_path, tiny_bert, _reviews(train, test), name="skip.yaml")
    task = _reviews(train, test)
    task["data"]["bad_rows"] = "error"
    error = _recipe_file(tmp_path, tiny_bert, task, name="error.yaml")
    # execute
    skipped, failed = run_cli("recipe", "check", skip), run_cli("recipe", "check", error)
    # assert: counted and left out by default, named with its test-file rows under bad_rows: error
    assert skipped.exit_code == 0, skipped.output
    assert f"reviews: 2 bad row(s): 2 {LABEL_NOT_IN_TRAINING} will be left out" in skipped.output
    assert failed.exit_code == 1, failed.output
    assert f"2 with {LABEL_NOT_IN_TRAINING} (row test:11, test:12)" in failed.output
    assert "no training row has that label" in failed.output
    data = load_task_data(TaskSpec(name="t", kind="classification", data=DataSpec(source=str(train)),
                                   split={"test_file": str(test)}))
    assert data.labels == list(LABELS) and len(data.test["text"]) == 10


def test_eval_only_classification_is_rejected_with_the_fix(run_cli, tiny_bert, tmp_path, files):
    # setup: the second task, eval_only on the review file (it used to die inside scikit-learn)
    train, test = files
    path = _recipe_file(tmp_path, tiny_bert, _reviews(train, test),
                        {"name": "ratings", "kind": "classification", "data": {"source": str(test)},
                         "split": {"eval_only": True}})
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 1, result.output
    assert "tasks[1].split.eval_only: classification task 'ratings' cannot be eval_only" in result.output
    assert "teacher.head: linear fits the task's head on its training rows" in result.output
    assert "split: {test_file: PATH}" in result.output


def test_the_training_side_must_hold_two_classes(tmp_path):
    # setup: every training row is 'pos'
    train = _tsv(tmp_path / "train.tsv", _rows(12, labels=("pos",)))
    test = _tsv(tmp_path / "test.tsv", _rows(6, 100))
    spec = TaskSpec(name="t", kind="classification", data=DataSpec(source=str(train)), split={"test_file": str(test)})
    # execute / assert: a DataError naming the fix, not LogisticRegression's
    with pytest.raises(DataError, match="all of class 'pos'; a classifier needs examples of at least two classes"):
        load_task_data(spec)


def test_a_dumped_recipe_with_a_test_file_validates_again(tiny_bert, files):
    # setup: report.json's recipe spells out every key (bundle.py validates it again)
    recipe = tiny_recipe(tiny_bert, tasks=[_reviews(*files), {"name": "lee", "kind": "similarity",
                                                               "data": {"source": "lee"}, "split": {"eval_only": True}}])
    # execute
    again = Recipe.model_validate(recipe.model_dump(mode="json"))
    # assert
    assert again.tasks[0].split.test_file == str(files[1]) and again.tasks[0].split.test_fraction is None
    assert again.sha256() == recipe.sha256()


def test_the_run_scores_the_own_test_file_and_records_it(tiny_bert, tmp_path, files):
    # setup: one test row is also in the training file: it is tested, not trained on
    from edgekit.pipeline import distill_and_export

    train, test = files
    shared = _rows(30, 1000, 1)[0]
    train = _tsv(tmp_path / "train_plus.tsv", [*_rows(90), shared])
    recipe = tiny_recipe(tiny_bert, tasks=[_reviews(train, test)], quantize={"variants": []},
                         budget={"min_runs": 20, "rounds": 1})  # the fewest timed runs: latency is not judged here
    messages = []
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=messages.append)
    # assert: the metrics are on the 30 rows of the test file, and training on the 90 others
    (task,) = report.data["tasks"]
    assert task["test_examples"] == 30 and task["train_examples"] == 90
    assert task["train_rows_also_in_test"] == 1
    assert task["test_from"] == f"split.test_file {test}"
    for row in report.data["files"]:
        assert row["metrics"]["reviews"]["n"] == 30
    assert report.data["gap"]["reviews"]["n"] == 30
    assert f"  reviews: classification, 90 train / 30 test examples (test: split.test_file {test})" in messages
    assert any("left 1 training row(s) out whose text is also a test example" in m for m in messages)
    # both files in the provenance, with their sha256
    record = report.data["provenance"]["data"]["reviews"]
    assert record["test_file"] == str(test)
    assert record["files"] == {str(train): sha256_file(train), str(test): sha256_file(test)}
    assert f"Task reviews: 90 train / 30 test examples (test: split.test_file {test})" in \
        (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
