"""A corpus of broken recipes and files, tried as a new user would: each gets one message that names
the problem and the fix, a non-zero exit, and no traceback; nothing is written."""


import numpy as np
import pytest
import yaml

from edgekit.testing import tiny_recipe


def _recipe_file(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _tiny(tiny_bert, **overrides) -> dict:
    return tiny_recipe(tiny_bert, **overrides).model_dump(mode="json")


def _reviews(tmp_path, rows, name="reviews.csv", encoding="utf-8"):
    path = tmp_path / name
    text = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)
    path.write_bytes(text.encode(encoding))
    return path


GOOD_ROWS = [(f"review number {i} with some {'best love' if i % 2 else 'worst hate'} words", "good" if i % 2 else "bad")
             for i in range(40)]  # texts a tiny teacher learns from: its files can ship


def _broken_yaml(tmp_path, tiny_bert):
    return _recipe_file(tmp_path, "name: x\nteacher:\n  model: m\n   kind: oops\n"), ["recipe.yaml:4", "not valid YAML"]


def _everything_at_once(tmp_path, tiny_bert):
    data = _tiny(tiny_bert)
    data["budget"]["ms"] = "4ms"
    data["distill"]["epochz"] = 3
    data["tasks"][0]["data"]["source"] = "missing.csv"
    # every problem, each at its line, in one message
    return _recipe_file(tmp_path, data), ["3 problem(s)", "write ms: 4", "epochz: unknown key",
                                          "file 'missing.csv' does not exist", "recipe.yaml:"]


def _teacher_without_weights(tmp_path, tiny_bert):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_bert / "config.json").read_text())
    return _recipe_file(tmp_path, _tiny(folder)), ["teacher.model", "no weights", "copy the weights there"]


def _missing_teacher_and_column(tmp_path, tiny_bert):
    path = _reviews(tmp_path, GOOD_ROWS)
    data = _tiny(tmp_path / "nope")
    data["tasks"][0]["data"] = {"source": str(path), "text": "review"}
    return _recipe_file(tmp_path, data), ["2 problem(s)", "has no column 'review'", "does not exist"]


def _unknown_target(tmp_path, tiny_bert):
    return _recipe_file(tmp_path, {**_tiny(tiny_bert), "target": "watch"}), ["no profile 'watch'", "arm64-phone"]


def _bad_rows_as_errors(tmp_path, tiny_bert):
    rows = [*GOOD_ROWS, ("", "good"), ("fine film", "meh"), ("mediocre", "")]
    data = _tiny(tiny_bert)
    data["tasks"][0]["data"] = {"source": str(_reviews(tmp_path, rows)), "labels": ["bad", "good"],
                                "bad_rows": "error"}
    return _recipe_file(tmp_path, data), ["1 with empty text (row 41)", "1 with unknown label (row 42)",
                                          "1 with no label (row 43)", "data.bad_rows: skip"]


def _latin1_rows(tmp_path, tiny_bert):
    path = _reviews(tmp_path, [*GOOD_ROWS, ("caf\xe9 society, tr\xe8s bien", "good")], encoding="latin-1")
    data = _tiny(tiny_bert)
    data["tasks"][0]["data"] = {"source": str(path), "bad_rows": "error"}
    return _recipe_file(tmp_path, data), ["1 with not UTF-8 (row 41)", "re-save the file as UTF-8"]


def _scores_that_are_not_numbers(tmp_path, tiny_bert):
    path = tmp_path / "pairs.csv"
    path.write_text("text_a,text_b,score\n" + "".join(f"a{i},b{i},{i / 10}\n" for i in range(10)) + "a,b,high\n")
    data = _tiny(tiny_bert)
    data["tasks"][1] = {"name": "pairs", "kind": "similarity", "data": {"source": str(path), "bad_rows": "error"},
                        "split": {"eval_only": True}}
    return _recipe_file(tmp_path, data), ["1 with score not a number (row 11)"]


def _unlabeled_test_split(tmp_path, tiny_bert):
    # every row lacks a label: skipping them all would leave nothing, so it is an error even with skip
    path = _reviews(tmp_path, [(text, "") for text, _ in GOOD_ROWS])
    data = _tiny(tiny_bert)
    data["tasks"][0]["data"] = {"source": str(path)}
    return _recipe_file(tmp_path, data), ["40 with no label", "Fix them"]


CASES = [_broken_yaml, _everything_at_once, _teacher_without_weights, _missing_teacher_and_column, _unknown_target,
         _bad_rows_as_errors, _latin1_rows, _scores_that_are_not_numbers, _unlabeled_test_split]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__.strip("_") for case in CASES])
@pytest.mark.parametrize("command", ["recipe check", "distill-and-export"])
def test_broken_recipe_or_data_is_one_message_before_any_work(case, command, run_cli, tiny_bert, tmp_path):
    # setup
    path, expected = case(tmp_path, tiny_bert)
    # execute
    result = run_cli(*command.split(), path, *(["--out", tmp_path / "run"] if command != "recipe check" else []))
    # assert
    assert result.exit_code == 1, result.output
    assert ("\n" + result.output).count("\nerror: ") == 1 and "Traceback" not in result.output  # one message
    for phrase in expected:
        assert phrase in result.output, (phrase, result.output)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".edgekit-cache").exists()


def test_skipped_bad_rows_are_counted_in_the_run_summary(tiny_bert, tmp_path):
    # setup
    from edgekit.pipeline import distill_and_export
    from edgekit.stages.loading import recipe_from_dict

    rows = [*GOOD_ROWS, ("", "good"), ("fine film", "meh"), ("caf\xe9", "good")]
    path = tmp_path / "reviews.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)).encode("latin-1"))
    data = _tiny(tiny_bert, quantize={"variants": []}, budget={"min_runs": 20, "rounds": 1})  # latency not judged
    data["tasks"][0]["data"] = {"source": str(path), "labels": ["bad", "good"]}
    messages = []
    # execute
    report = distill_and_export(recipe_from_dict(data), out=tmp_path / "run", cache_dir=tmp_path / "cache",
                                echo=messages.append)
    # assert
    task = report.data["tasks"][0]
    assert task["skipped_rows"] == {"empty text": {"count": 1, "rows": [41]},
                                    "unknown label": {"count": 1, "rows": [42]},
                                    "not UTF-8": {"count": 1, "rows": [43]}}
    assert task["train_examples"] + task["test_examples"] == 40
    assert any("left out 3 bad row(s): 1 empty text, 1 unknown label, 1 not UTF-8" in m for m in messages)
    assert "Left out of task sentiment: 1 row(s) with empty text (rows 41)" in (tmp_path / "run/report.md").read_text()


def test_nan_teacher_outputs_stop_the_run_naming_the_input(run_cli, tiny_bert, tmp_path):
    # setup: the tiny teacher with one weight matrix made NaN (a corrupt or badly converted checkpoint)
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(tiny_bert, tmp_path / "teacher")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("attention.output.dense.weight"))
    weights[name] = np.full_like(weights[name], np.nan)
    save_file(weights, folder / "model.safetensors")
    path = _recipe_file(tmp_path, _tiny(folder))
    # execute
    result = run_cli("distill-and-export", path, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    # assert
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the teacher's outputs hold NaN or inf" in result.output and "input #0" in result.output
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "cache").glob("teacher-embeddings/*/arrays.npz"))  # NaN is never cached


def test_truncated_and_mismatched_onnx_files(run_cli, tiny_bert, tiny_bert_onnx, tmp_path):
    # setup: half of a real file; and an image model where a text model is expected
    from edgekit.testing import tiny_cnn

    data = tiny_bert_onnx.read_bytes()
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    image_dir = tmp_path / "cnn"
    result = run_cli("export", tiny_cnn(tmp_path / "cnn.pt"), "--task", "image-classification", "-o", image_dir)
    assert result.exit_code == 0, result.output
    # execute
    outcomes = {
        "quantize truncated": run_cli("quantize", truncated, "--method", "int8-dynamic", "-o", tmp_path / "q.onnx"),
        "bench truncated": run_cli("bench", truncated),
        "text calibration of an image model": run_cli("quantize", image_dir / "model.onnx", "--method",
                                                      "int8-static-minmax", "--calibration", "rotten_tomatoes",
                                                      "--tokenizer", tiny_bert, "-o", tmp_path / "s.onnx"),
        "text lengths for an image model": run_cli("bench", image_dir / "model.onnx", "--lengths-from", "lee",
                                                   "--tokenizer", tiny_bert),
    }
    # assert
    for what, result in outcomes.items():
        assert result.exit_code == 1 and result.output.startswith("error: "), (what, result.output)
        assert "Traceback" not in result.output, what
    assert "truncated or corrupt" in outcomes["quantize truncated"].output
    assert "pixel_values" in outcomes["text calibration of an image model"].output
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "s.onnx").exists()


def test_a_path_the_file_system_refuses_is_one_message(run_cli, tmp_path):
    # execute: a name longer than the file system allows (as a mangled variable can produce)
    result = run_cli("bench", tmp_path / ("a" * 300 + ".onnx"))
    # assert
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: File name too long") and "the previous results" in result.output
