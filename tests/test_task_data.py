import csv
import importlib.util
import json

import numpy as np
import pytest

from edgekit.data.tasks import load_task_data, load_unlabeled, spec_problems
from edgekit.errors import DataError
from edgekit.recipe import DataSpec, TaskSpec


def _task(source, kind="classification", split=None, **columns):
    return TaskSpec(name="t", kind=kind, data=DataSpec(source=str(source), **columns), split=split or {})


def _write(path, rows):
    """Write dict rows as CSV, TSV, JSONL or Parquet, by the path's suffix."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _reviews(n=20):
    """n distinct reviews labelled good/bad, plus a duplicate and a blank one (both must vanish: the blank
    one as a bad row, skipped by default)."""
    rows = [{"review": f"review number {i}", "sentiment": "good" if i % 3 else "bad", "extra": i} for i in range(n)]
    return rows + [dict(rows[0]), {"review": "   ", "sentiment": "good", "extra": -1}]


def test_rotten_tomatoes_split_has_no_text_on_both_sides():
    # execute
    data = load_task_data(_task("rotten_tomatoes"))
    # assert: 12,808 snippets less 56 verbatim repeats; 20% of them held out
    assert len(data.test["text"]) == round(0.2 * 12752) == 2550
    assert len(data.train["text"]) == 12752 - 2550
    assert not set(data.train["text"]) & set(data.test["text"])
    assert data.labels == ["fresh", "rotten"]
    assert data.train["label"].dtype == np.int64 and set(data.test["label"]) == {0, 1}
    assert data.train_inputs() == data.train["text"] and len(data.digest) == 64


def test_split_is_deterministic_and_moves_with_the_seed():
    # execute
    first, again = load_task_data(_task("rotten_tomatoes")), load_task_data(_task("rotten_tomatoes"))
    other = load_task_data(_task("rotten_tomatoes", split={"seed": 1}))
    capped = load_task_data(_task("rotten_tomatoes", split={"max_train": 100, "max_test": 50}))
    # assert
    assert again.test["text"] == first.test["text"] and again.digest == first.digest
    assert other.test["text"] != first.test["text"] and other.digest != first.digest
    assert capped.train["text"] == first.train["text"][:100] and capped.test["text"] == first.test["text"][:50]
    assert np.array_equal(capped.test["label"], first.test["label"][:50]) and capped.digest != first.digest


def test_lee_pairs_for_evaluation_only():
    # execute
    data = load_task_data(_task("lee", "similarity", split={"eval_only": True}))
    # assert: every pair i<j of the 50 documents, none for training
    assert len(data.test["text_a"]) == len(data.test["text_b"]) == 50 * 49 // 2 == 1225
    assert data.test["score"].dtype == np.float64 and 0 <= data.test["score"].min() <= data.test["score"].max() <= 1
    assert len({*data.test["text_a"], *data.test["text_b"]}) == 50
    assert data.train["text_a"] == data.train["text_b"] == [] and data.train["score"].shape == (0,)
    assert data.train_inputs() == [] and data.labels == []


def test_lee_split_trains_on_distinct_texts():
    # execute
    data = load_task_data(_task("lee", "similarity"))
    inputs = data.train_inputs()
    # assert
    assert (len(data.train["score"]), len(data.test["score"])) == (980, 245)
    assert len(inputs) == len(set(inputs)) == len({*data.train["text_a"], *data.train["text_b"]}) <= 50


def test_digits_as_an_image_task():
    # execute
    data = load_task_data(_task("digits", "image-classification", split={"test_fraction": 0.25}))
    # assert
    assert data.labels == [str(d) for d in range(10)]
    assert data.train["image"].shape[1:] == (1, 8, 8) and data.train["image"].dtype == np.float32
    assert len(data.test["image"]) == len(data.test["label"]) == round(0.25 * 1797)
    assert data.train_inputs() is data.train["image"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_table_files_with_custom_columns(tmp_path, suffix):
    # setup
    path = _write(tmp_path / f"reviews{suffix}", _reviews())
    # execute
    data = load_task_data(_task(path, text="review", label="sentiment", split={"test_fraction": 0.25}))
    # assert: the duplicate and the blank review are gone; 25% of the 20 distinct held out
    assert data.labels == ["bad", "good"]
    assert (len(data.train["text"]), len(data.test["text"])) == (15, 5)
    texts = data.train["text"] + data.test["text"]
    assert sorted(texts) == sorted(f"review number {i}" for i in range(20))
    gold = {f"review number {i}": int(i % 3 != 0) for i in range(20)}
    assert [gold[t] for t in data.test["text"]] == list(data.test["label"])


def test_same_rows_give_the_same_split_in_every_format(tmp_path):
    # setup
    rows = _reviews()
    # execute
    digests = {load_task_data(_task(_write(tmp_path / f"r{s}", rows), text="review", label="sentiment")).digest
               for s in (".csv", ".jsonl", ".parquet")}
    # assert: the digest depends on the examples, not on the file
    assert len(digests) == 1


def test_digest_changes_with_the_data(tmp_path):
    # setup
    rows = _reviews()
    before = load_task_data(_task(_write(tmp_path / "a.csv", rows), text="review", label="sentiment"))
    rows[5]["sentiment"] = "bad" if rows[5]["sentiment"] == "good" else "good"
    # execute
    after = load_task_data(_task(_write(tmp_path / "b.csv", rows), text="review", label="sentiment"))
    # assert
    assert after.digest != before.digest


def test_integer_labels_keep_numeric_order(tmp_path):
    # setup
    rows = [{"text": f"t{i}", "label": [2, 10, 9][i % 3]} for i in range(12)]
    # execute
    data = load_task_data(_task(_write(tmp_path / "n.jsonl", rows)))
    # assert
    assert data.labels == ["2", "9", "10"]


def test_similarity_and_retrieval_files(tmp_path):
    # setup
    pairs = [{"s1": f"a{i}", "s2": f"b{i}", "sim": i / 10} for i in range(10)]
    pairs.append(dict(pairs[0], sim=0.9))  # same pair again: dropped, the first score kept
    queries = [{"q": f"question {i}", "doc": f"answer {i}"} for i in range(10)]
    # execute
    sim = load_task_data(_task(_write(tmp_path / "p.jsonl", pairs), "similarity", text_a="s1", text_b="s2",
                               score="sim"))
    ret = load_task_data(_task(_write(tmp_path / "q.csv", queries), "retrieval", query="q", document="doc"))
    # assert
    assert (len(sim.train["score"]), len(sim.test["score"])) == (8, 2)
    scores = dict(zip(sim.train["text_a"] + sim.test["text_a"], [*sim.train["score"], *sim.test["score"]]))
    assert scores["a0"] == 0.0 and scores["a7"] == pytest.approx(0.7)
    assert set(sim.train_inputs()) == {*sim.train["text_a"], *sim.train["text_b"]}
    assert all(q.replace("question", "answer") == d for q, d in zip(ret.test["query"], ret.test["document"]))
    assert ret.train_inputs() == ret.train["query"] + ret.train["document"]


def test_npz_images(tmp_path):
    # setup
    images = np.arange(10 * 6 * 6, dtype=np.float64).reshape(10, 6, 6)  # (N, H, W): one channel added
    np.savez(tmp_path / "img.npz", images=images, labels=np.array(["cat", "dog"] * 5))
    # execute
    data = load_task_data(_task(tmp_path / "img.npz", "image-classification", normalize=False))  # floats as stored
    # assert
    assert data.labels == ["cat", "dog"]
    assert data.train["image"].shape == (8, 1, 6, 6) and data.test["image"].dtype == np.float32
    assert data.train["label"].tolist() == [int(img[0, 0, 0] // 36) % 2 for img in data.train["image"]]


def test_missing_column_lists_the_columns_and_the_key(tmp_path):
    # setup
    path = _write(tmp_path / "r.csv", _reviews())
    # execute
    with pytest.raises(DataError) as error:
        load_task_data(_task(path, label="sentiment"))
    # assert
    assert "no column 'text'" in str(error.value) and "review, sentiment, extra" in str(error.value)
    assert "data.text" in str(error.value)


@pytest.mark.parametrize(("source", "kind", "hint"), [
    ("lee", "classification", "use rotten_tomatoes"),
    ("digits", "similarity", "use lee"),
    ("rotten_tomatoes", "retrieval", "columns query and document"),
    ("lee_background", "classification", "distill.unlabeled"),
])
def test_wrong_kind_of_builtin_names_the_fix(source, kind, hint):
    # execute
    with pytest.raises(DataError, match=hint):
        load_task_data(_task(source, kind))


def test_unusable_sources_get_clear_errors(tmp_path):
    # setup
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "notes.md").write_text("text\n")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 2, 2)))
    (tmp_path / "x.npz").write_bytes((tmp_path / "x.npy").read_bytes())
    # execute / assert
    with pytest.raises(DataError, match="does not exist"):
        load_task_data(_task(tmp_path / "absent.csv"))
    with pytest.raises(DataError, match="neither a file nor a built-in"):
        load_task_data(_task("imdb"))
    with pytest.raises(DataError, match="holds no examples"):
        load_task_data(_task(tmp_path / "header.csv"))
    with pytest.raises(DataError, match=r"\.csv/\.tsv/\.jsonl/\.parquet"):
        load_task_data(_task(tmp_path / "notes.md"))
    with pytest.raises(DataError, match="numpy.savez"):
        load_task_data(_task(tmp_path / "x.npz", "image-classification"))
    with pytest.raises(DataError, match="leave one side empty"):
        load_task_data(_task(_write(tmp_path / "two.csv", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])))


def test_bad_rows_are_skipped_and_counted_or_named_as_errors(tmp_path):
    # setup: 20 good rows, then one without a label, one with a label outside data.labels, one empty text
    rows = [{"text": f"text {i}", "label": "x" if i % 2 else "y"} for i in range(20)]
    path = _write(tmp_path / "u.csv", [*rows, {"text": "a", "label": ""}, {"text": "b", "label": "z"},
                                       {"text": " ", "label": "x"}])
    scores = _write(tmp_path / "s.csv", [{"text_a": f"a{i}", "text_b": "b", "score": i} for i in range(5)]
                    + [{"text_a": "a", "text_b": "b", "score": "high"}])
    # execute
    skipped = load_task_data(_task(path, labels=["y", "x"]))
    with pytest.raises(DataError) as error:
        load_task_data(_task(path, labels=["y", "x"], bad_rows="error"))
    with pytest.raises(DataError, match=r"1 with score not a number \(row 6\)"):
        load_task_data(_task(scores, "similarity", split={"eval_only": True}, bad_rows="error"))
    # assert: labels in the recipe's order; the bad rows counted, with their numbers
    assert skipped.labels == ["y", "x"] and len(skipped.train["text"]) + len(skipped.test["text"]) == 20
    assert skipped.skipped == {"no label": [21], "unknown label": [22], "empty text": [23]}
    message = str(error.value)
    assert "1 with no label (row 21); 1 with unknown label (row 22); 1 with empty text (row 23)" in message
    assert "data.bad_rows: skip" in message and "the allowed ones are data.labels" in message


def test_hf_source_without_datasets_names_the_install(monkeypatch):
    # setup: a Python without the datasets package (make setup installs it for the bench's model2vec rows)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else find_spec(name, *a))
    # execute / assert
    with pytest.raises(DataError, match=r"pip install datasets"):
        load_task_data(_task("hf:rotten_tomatoes"))


def test_unlabeled_texts(tmp_path):
    # setup
    (tmp_path / "lines.txt").write_text("first\n\n  second  \n", encoding="utf-8")
    path = _write(tmp_path / "r.jsonl", _reviews(3))
    # execute
    lines = load_unlabeled(DataSpec(source=str(tmp_path / "lines.txt")))
    reviews = load_unlabeled(DataSpec(source=str(path), text="review"))
    background = load_unlabeled(DataSpec(source="lee_background"))
    snippets = load_unlabeled(DataSpec(source="rotten_tomatoes"))
    # assert
    assert lines == ["first", "second"]
    assert reviews == ["review number 0", "review number 1", "review number 2", "review number 0"]
    assert len(background) == 300 and any(len(text) > 2000 for text in background)
    assert len(snippets) == 12808 and len(load_unlabeled(DataSpec(source="lee"))) == 50
    # the plot synopses, one sentence per text: in-domain movie text that is not among the labelled snippets
    plots = load_unlabeled(DataSpec(source="rotten_tomatoes_plots"))
    assert len(plots) == 5828 and not set(plots) & set(snippets)
    assert plots[0] == "Vijay Singh Rajput (Amitabh Bachchan) is a quirky manager of Vilasrao Jefferson Bank."
    with pytest.raises(DataError, match="unlabeled data are texts"):
        load_unlabeled(DataSpec(source="digits"))
    with pytest.raises(DataError, match="distill.unlabeled"):
        load_unlabeled(DataSpec(source=str(path)))


def _source_problems(sources) -> list[str]:
    """spec_problems of each (key, kind, DataSpec), as edgekit.stages.loading's preflight asks them."""
    return [problem for key, kind, spec in sources for problem in spec_problems(spec, kind, key)]


def test_source_problems_name_each_key(tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "r.csv", _reviews())
    (tmp_path / "notes.md").write_text("x")
    sources = [("tasks[0].data", "classification", DataSpec(source="x.csv")),
               ("tasks[1].data", "classification", DataSpec(source="r.csv", label="sentiment")),
               ("tasks[2].data", "similarity", DataSpec(source="lee")),
               ("tasks[3].data", "classification", DataSpec(source="hf:imdb")),
               *((f"distill.unlabeled[{j}]", None, DataSpec(source=source))
                 for j, source in enumerate(["lee_background", "wiki", "notes.md"]))]
    # execute
    problems = _source_problems(sources)
    # assert
    assert problems[0].startswith("tasks[0].data.source: file 'x.csv' does not exist")
    assert problems[1].startswith("tasks[1].data.text: file 'r.csv' has no column 'text' (it has: review, sent")
    assert problems[2].startswith("distill.unlabeled[1].source: 'wiki' is neither a file nor a built-in")
    assert problems[3].startswith("distill.unlabeled[2].source: file 'notes.md': '.md' files cannot hold")
    assert len(problems) == 4


def test_source_problems_report_a_missing_package(monkeypatch):
    # setup
    from edgekit.data import builtin

    monkeypatch.setitem(builtin._FILES, "lee_similarities", ("edgekit_no_such_package", "x", "pip install gensim"))
    # execute
    problems = _source_problems([("tasks[0].data", "similarity", DataSpec(source="lee"))])
    # assert
    assert problems == [("tasks[0].data.source: built-in data set 'lee' needs the "
                         "edgekit_no_such_package package: run `pip install gensim`.")]


def test_csv_with_a_byte_order_mark(tmp_path):
    # setup: Excel's "CSV UTF-8" starts the file with a BOM, which must not become part of the first column's name
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\n".encode("utf-8-sig") + "".join(f"t{i},{i % 2}\n" for i in range(10)).encode())
    # execute
    data = load_task_data(_task(path))
    # assert
    assert data.labels == ["0", "1"] and len(data.train["text"]) == 8
    assert _source_problems([("tasks[0].data", "classification", _task(path).data)]) == []
