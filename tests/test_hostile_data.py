"""Hostile recipes, data files and cache entries (issue 27): each is refused with one message naming the file,
what is wrong and the fix (a damaged cache entry: a message and a recompute), never a traceback, a hang, a read
or write outside the folder, or an allocation sized by the file."""

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import threading
import time
import zipfile

import numpy as np
import pytest
import torch
import yaml

from edgekit.data import load_images, load_texts
from edgekit.errors import DataError, RecipeError
from edgekit.stages.distill.trainer import CHECKPOINT, FINAL, TrainSettings, train
from edgekit.stages.loading import load_recipe
from edgekit.testing import tiny_recipe
from edgekit.trust.cache import Cache, write_checked

# ---------------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def no_hang(seconds=30):
    """Fail instead of hanging: SIGALRM interrupts a blocked open() or read() of a FIFO (tests run in the main
    thread), and the handler's AssertionError ends the test."""

    def fail(signum, frame):
        raise AssertionError(f"hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Payload:
    """Unpickling this object creates `marker`: whether a file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_error(result):
    """The CLI's answer was one `error:` line block, a non-zero exit, and no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    assert ("\n" + result.output).count("\nerror: ") == 1, result.output


def _recipe_file(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _tiny(tiny_bert, **overrides) -> dict:
    return tiny_recipe(tiny_bert, **overrides).model_dump(mode="json")


def _with_source(tiny_bert, source, kind="classification") -> dict:
    data = _tiny(tiny_bert)
    data["tasks"][0] = {"name": "t", "kind": kind, "data": {"source": str(source)}}
    return data


def _deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def _forged_npy(shape=(196_000_000_000,)) -> bytes:
    """A 100-byte .npy whose header declares `shape` float32: 784 GB by default."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header["shape"] = shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + b"\0" * 16


def _snapshot(folder, skip=()):
    """{relative path: sha256} of every file below `folder` outside the `skip` folders: what changed there."""
    found = {}
    for path in folder.rglob("*"):
        if any(path.is_relative_to(s) for s in skip) or not path.is_file() or path.is_symlink():
            continue
        found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _reseal(path):
    """Recompute the sha256 sidecar of `path`, as whoever can write the cache can."""
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")


# ---------------------------------------------------------------------------------------------- recipes (YAML)


def test_a_recipe_nested_thousands_deep_is_refused_at_its_line(run_cli, tmp_path):
    # setup: flow and block nesting, both far past any recipe (Python's recursion limit is 1,000)
    flow = _recipe_file(tmp_path, "name: x\ntasks: " + _deep_json(5000) + "\n", "flow.yaml")
    block = _recipe_file(tmp_path, "name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500
                         + "v\n", "block.yaml")
    for path, line in ((flow, 2), (block, 102)):
        # execute
        result = run_cli("recipe", "check", path)
        # assert: the file and line, what is wrong, the fix
        _one_error(result)
        assert f"{path}:{line}: the recipe nests lists or mappings more than 100 deep" in result.output
        assert "write its values out plainly" in result.output


def test_a_yaml_alias_bomb_is_refused_before_anything_expands_it(run_cli, tmp_path):
    # setup: "billion laughs": 9 levels of 9 aliases each, 9**9 (387 million) strings once expanded
    lines = ["name: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"k{i}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    path = _recipe_file(tmp_path, "\n".join(lines) + "\n")
    # execute: json.dumps, pydantic or the cache key would walk all 387 million
    began = time.perf_counter()
    with no_hang(60):
        result = run_cli("recipe", "check", path)
    # assert
    _one_error(result)
    assert time.perf_counter() - began < 20
    assert f"{path}:" in result.output and "more than 100,000 values through its aliases" in result.output
    assert "alias bomb" in result.output and "write its values out plainly" in result.output


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    # setup: a list that contains itself (json.dumps would fail with a ValueError, repr recurse)
    path = _recipe_file(tmp_path, "name: x\ntasks: &loop [1, *loop]\n")
    # execute
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    # assert
    assert f"{path}:2: the recipe holds alias *loop inside its own anchor" in str(error.value)


def test_a_few_plain_aliases_still_load(tiny_bert, tmp_path):
    # setup: two tasks sharing their data and split settings: yaml.safe_dump writes the shared dicts once, as an
    # anchor (&id001), and again as aliases (*id001): what aliases are for
    data = _tiny(tiny_bert)
    first = data["tasks"][0]
    data["tasks"].append({**first, "name": "sentiment2", "data": first["data"], "split": first["split"]})
    text = yaml.safe_dump(data, sort_keys=False)
    assert "*id001" in text
    path = _recipe_file(tmp_path, text)
    # execute
    recipe = load_recipe(path)
    # assert
    assert recipe.tasks[2].split == recipe.tasks[0].split and recipe.tasks[2].data == recipe.tasks[0].data


def test_a_recipe_larger_than_a_megabyte_is_refused_unread(run_cli, tmp_path):
    # setup: 64 MB of comments (a recipe is a page)
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.write(b"name: x\n")
        f.truncate(64 << 20)
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    _one_error(result)
    assert f"recipe {path} is 67,108,864 bytes, more than the 1,048,576 a recipe can be" in result.output
    assert "pass the path of a YAML recipe" in result.output


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_as_the_recipe_is_refused_before_it_is_opened(kind, run_cli, tmp_path):
    # setup: a FIFO no one writes (a read would block forever), /dev/zero (a read never ends)
    if kind == "fifo":
        path = tmp_path / "recipe.yaml"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    # execute
    with no_hang(20):
        result = run_cli("recipe", "check", path)
    # assert
    _one_error(result)
    what = "a FIFO (named pipe)" if kind == "fifo" else "a device"
    assert f"recipe {path} is {what}, not a regular file" in result.output
    assert "pass the path of a YAML recipe" in result.output


def test_a_recipe_that_is_not_utf8_text_names_the_fix(run_cli, tmp_path):
    # setup: Latin-1 bytes, a NUL, and UTF-16 (which YAML would read as NULs between letters)
    cases = {"latin.yaml": b"name: caf\xe9\n", "nul.yaml": b"name: x\x00y\n",
             "utf16.yaml": "name: x\n".encode("utf-16-le")}
    for name, data in cases.items():
        path = _recipe_file(tmp_path, data, name)
        # execute
        result = run_cli("recipe", "check", path)
        # assert
        _one_error(result)
        assert f"{path}:" in result.output, result.output
        assert "not UTF-8 text" in result.output or "control character U+0000" in result.output, result.output
        assert "re-save" in result.output and "UTF-8" in result.output


def test_python_object_tags_in_a_recipe_never_run(run_cli, tmp_path):
    # setup
    marker = tmp_path / "ran"
    path = _recipe_file(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    _one_error(result)
    assert f"{path}:1:" in result.output and "never builds Python objects" in result.output
    assert "remove the tag" in result.output and not marker.exists()


@pytest.mark.parametrize("profile", ["bomb", "deep", "fifo", "huge", "tag"])
def test_a_target_profile_of_ones_own_is_read_as_defensively_as_a_recipe(profile, tiny_bert, run_cli, tmp_path):
    # setup: target: PATH names a profile YAML of the user's own
    path = tmp_path / "mine.yaml"
    if profile == "bomb":
        lines = ["description: &a [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"k{i}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]" for i in range(1, 8)]
        path.write_text("\n".join(lines) + "\n")
    elif profile == "deep":
        path.write_text("description: " + _deep_json(3000) + "\n")
    elif profile == "fifo":
        os.mkfifo(path)
    elif profile == "huge":
        path.write_bytes(b"description: x\n" + b"#" * (2 << 20))
    else:
        path.write_text(f"description: !!python/object/apply:os.system ['touch {tmp_path / 'ran'}']\n")
    recipe = _recipe_file(tmp_path, {**_tiny(tiny_bert), "target": str(path)})
    # execute
    with no_hang(20):
        result = run_cli("recipe", "check", recipe)
    # assert: the recipe's line, then the profile file and what is wrong with it
    _one_error(result)
    assert f"{recipe}:" in result.output and str(path) in result.output
    expected = {"bomb": "alias bomb", "deep": "more than 100 deep", "fifo": "a FIFO (named pipe), not a regular file",
                "huge": "more than the 1,048,576 a profile can be", "tag": "never builds Python objects"}[profile]
    assert expected in result.output
    assert not (tmp_path / "ran").exists()


# -------------------------------------------------------------------------------------------------- data files


def test_a_jsonl_line_nested_thousands_deep_is_a_data_error(run_cli, tiny_bert, tmp_path):
    # setup: a header line that is fine, then one nested 100,000 deep (json.loads: RecursionError)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a fine review", "label": "good"}\n{"text": ' + _deep_json(100_000) + ', "label": 1}\n')
    recipe = _recipe_file(tmp_path, _with_source(tiny_bert, data))
    # execute: the preflight reads the header line only; the run reads every row, and so does --calibration
    result = run_cli("distill-and-export", recipe, "--out", tmp_path / "run")
    texts = run_cli("quantize", _dummy_model(tmp_path), "--method", "int8-static-minmax", "--calibration", data)
    # assert
    for answer in (result, texts):
        _one_error(answer)
        assert f"{data}: line 2 nests lists or objects more than 100 deep" in answer.output
        assert "write one JSON object per line" in answer.output
    assert not (tmp_path / "run").exists()


def _dummy_model(tmp_path):
    """An .onnx file for `edgekit quantize`: calibration data is read (and refused) before the model is."""
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"not read")
    return path


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_a_data_line_longer_than_the_limit_is_refused_without_reading_it_whole(suffix, tmp_path):
    # setup: 12 MB without a line break (as a file of gigabytes would be): a line-by-line read would take it whole
    path = tmp_path / f"one-line{suffix}"
    head = {".txt": b"", ".csv": b"text,label\n", ".jsonl": b'{"text": "x"}\n'}[suffix]
    path.write_bytes(head + b"a" * (12 << 20))
    # execute
    with pytest.raises(DataError) as error:
        load_texts(str(path))
    # assert
    line = 1 if suffix == ".txt" else 2
    assert f"{path}: line {line} is longer than 8,388,608 characters" in str(error.value)
    assert "a file without line breaks" in str(error.value) and "save it as UTF-8 text" in str(error.value)


def test_a_csv_field_over_the_field_limit_names_the_file_and_the_fix(run_cli, tiny_bert, tmp_path):
    # setup: an unclosed quote makes the rest of the file one field, larger than csv.field_size_limit()
    data = tmp_path / "reviews.csv"
    data.write_text('text,label\n"' + "word " * 40_000 + "\n" + "".join(f"r{i},good\n" for i in range(20)))
    recipe = _recipe_file(tmp_path, _with_source(tiny_bert, data))
    # execute
    result = run_cli("distill-and-export", recipe, "--out", tmp_path / "run")
    # assert
    _one_error(result)
    assert f"{data}: a field is longer than 131,072 characters" in result.output
    assert "close the quote or shorten the field" in result.output and "_csv.Error" not in result.output


@pytest.mark.parametrize("case", ["nul", "utf16", "latin1"])
def test_text_data_that_is_not_utf8_names_the_fix(case, run_cli, tmp_path):
    # setup: calibration texts with a NUL byte, as UTF-16 (a NUL in every other byte), as Latin-1
    path = tmp_path / "texts.txt"
    path.write_bytes({"nul": b"one\ntw\x00o\n", "utf16": "one\ntwo\n".encode("utf-16-le"),
                      "latin1": "caf\xe9\n".encode("latin-1")}[case])
    # execute
    result = run_cli("quantize", _dummy_model(tmp_path), "--method", "int8-static-minmax", "--calibration", path)
    # assert
    _one_error(result)
    expected = "not UTF-8 text" if case == "latin1" else "holds a NUL byte, which text does not"
    assert f"{path}: " in result.output and expected in result.output and "re-save it as UTF-8" in result.output


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_as_data_is_refused_before_it_is_opened(kind, run_cli, tiny_bert, tmp_path):
    # setup
    if kind == "fifo":
        data = tmp_path / "reviews.csv"
        os.mkfifo(data)
    else:
        data = "/dev/zero"
    recipe = _recipe_file(tmp_path, _with_source(tiny_bert, data))
    # execute: as a recipe's data.source, and as --calibration texts and images
    with no_hang(30):
        checked = run_cli("recipe", "check", recipe)
        texts = run_cli("quantize", _dummy_model(tmp_path), "--method", "int8-static-minmax", "--calibration", data)
        with pytest.raises(DataError) as images:
            load_images(str(data))
    # assert
    what = "a FIFO (named pipe)" if kind == "fifo" else "a device"
    for result in (checked, texts):
        _one_error(result)
        assert f"'{data}' is {what}, not a regular file" in result.output and "save the data to one" in result.output
    assert f"'{data}' is {what}" in str(images.value)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_image_file_whose_header_declares_784_gb_is_refused_before_allocation(suffix, run_cli, tiny_bert,
                                                                                   tmp_path):
    # setup: 100 bytes whose .npy header declares 196 billion float32 (numpy would allocate from the header)
    path = tmp_path / f"images{suffix}"
    if suffix == ".npy":
        path.write_bytes(_forged_npy())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("images.npy", _forged_npy())
            archive.writestr("labels.npy", _forged_npy((3,)))
    # execute
    with no_hang(30):
        result = run_cli("quantize", _dummy_model(tmp_path), "--method", "int8-static-minmax", "--calibration", path)
    # assert
    _one_error(result)
    assert str(path) in result.output and "(784,000,000,000 bytes" in result.output
    assert "truncated or forged" in result.output and "numpy.save" in result.output
    if suffix == ".npz":  # and as a recipe's image task, in the preflight
        data = _with_source(tiny_bert, path, "image-classification")
        checked = run_cli("recipe", "check", _recipe_file(tmp_path, data))
        _one_error(checked)
        assert f"{path}, array 'images': its header declares" in checked.output


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_object_array_image_file_is_refused_without_unpickling(suffix, tmp_path):
    # setup: an object array holds a pickle; this one's unpickling would create `marker`
    marker, path = tmp_path / "ran", tmp_path / f"images{suffix}"
    evil = np.array([_Payload(marker)], dtype=object)
    if suffix == ".npy":
        np.save(path, evil, allow_pickle=True)
    else:
        np.savez(path, images=evil, labels=np.arange(1))
    # execute
    with pytest.raises(DataError) as error:
        load_images(str(path))
    # assert
    assert str(path) in str(error.value) and "holds Python objects" in str(error.value)
    assert "edgekit never unpickles" in str(error.value) and not marker.exists()


# ------------------------------------------------------------------------------------------------------- cache


@pytest.fixture(scope="module")
def finished(finished_run, tiny_bert):
    """The shared tiny run's recipe and cache: tests damage a copy of the cache and run again."""
    return tiny_recipe(tiny_bert), finished_run / "cache"


def test_an_exports_entry_listing_a_path_outside_the_cache_reads_and_writes_nothing_there(finished, tmp_path):
    # setup: whoever can write the cache lists '../../../secret.txt' in every exports entry, with sidecars that
    # pass; the file it names exists outside the cache, its sha256 beside it
    from edgekit.pipeline import distill_and_export

    recipe, cache = finished
    work = tmp_path / "a"
    shutil.copytree(cache, work / "cache")
    secret = work / "secret.txt"
    secret.write_text("not the cache's\n")
    _reseal(secret)
    entries = list((work / "cache").glob("exports/*/entry.json"))
    assert entries
    for entry in entries:
        listing = json.loads(entry.read_text())
        listing["files"].append("../../../secret.txt")
        entry.write_text(json.dumps(listing))
        _reseal(entry)
    before = _snapshot(tmp_path, skip=[work / "cache"])
    messages = []
    # execute
    report = distill_and_export(recipe, out=work / "run", cache_dir=work / "cache", echo=messages.append)
    # assert: each entry reported and recomputed; nothing outside the cache and the run folder was written
    text = "\n".join(messages)
    assert text.count("lists '../../../secret.txt', which is not a plain file name inside its folder") == len(entries)
    assert "recomputes it" in text and "exported and quantized files from the cache" not in text
    after = _snapshot(tmp_path, skip=[work / "cache", work / "run"])
    assert after == before and secret.read_text() == "not the cache's\n"
    assert report.files and all("../" not in name for entry in entries
                                for name in json.loads(entry.read_text())["files"])


def test_an_exports_entry_named_by_an_absolute_path_or_holding_no_list_is_recomputed():
    # setup: the listing check alone (the end-to-end test above runs the pipeline)
    from edgekit.stages.measure import _listing_problem

    needed = ["model.onnx"]
    # execute / assert
    assert "not a plain file name" in _listing_problem({"files": ["model.onnx", "/etc/passwd"]}, needed)
    assert "not a plain file name" in _listing_problem({"files": ["model.onnx", "a\\..\\b"]}, needed)
    assert "not a plain file name" in _listing_problem({"files": ["model.onnx", "x\x1b[2J"]}, needed)
    assert "not a file name" in _listing_problem({"files": ["model.onnx", ".."]}, needed)
    assert "not a file name" in _listing_problem({"files": ["model.onnx", 7]}, needed)
    assert _listing_problem({"files": "model.onnx"}, needed) == "has no list of files"
    assert _listing_problem({"files": []}, needed) == "lacks model.onnx"
    assert _listing_problem({"files": ["model.onnx", "model.onnx.data"]}, needed) is None


def test_a_cache_arrays_file_holding_pickled_objects_is_recomputed_and_never_unpickled(tmp_path):
    # setup: arrays.npz replaced by an object array whose unpickling creates `marker`, its sidecar recomputed
    marker, messages = tmp_path / "ran", []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_arrays("teacher-outputs", "k", {"logits/x": np.ones((2, 3), np.float32)})
    path = tmp_path / "cache" / "teacher-outputs" / "k" / "arrays.npz"
    with open(path, "wb") as f:
        np.savez(f, **{"logits/x": np.array([_Payload(marker)], dtype=object)})
    _reseal(path)
    # execute
    loaded = cache.load_arrays("teacher-outputs", "k")
    # assert: reported as corrupt and recomputed (None), the payload never ran
    assert loaded is None and not marker.exists()
    assert any(m.startswith("  corrupt cache entry: ") and str(path) in m and "holds Python objects" in m
               and "edgekit recomputes it" in m for m in messages), messages


def test_a_cache_arrays_file_whose_header_declares_784_gb_is_recomputed(tmp_path):
    # setup
    messages = []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_arrays("static-tokens", "k", {"ids": np.arange(3)})
    path = tmp_path / "cache" / "static-tokens" / "k" / "arrays.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ids.npy", _forged_npy())
    _reseal(path)
    # execute
    loaded = cache.load_arrays("static-tokens", "k")
    # assert
    assert loaded is None
    assert any("corrupt cache entry" in m and "784,000,000,000 bytes" in m for m in messages), messages


@pytest.mark.parametrize("content", ["{not json", "deep", "[1, 2]", '"text"', "huge-number", "bad-utf8"])
def test_a_malformed_deep_or_non_object_entry_json_is_recomputed(content, tmp_path):
    # setup: entry.json replaced, its sidecar recomputed so the hash passes
    messages = []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_json("probes", "k", {"name": "L1"})
    path = tmp_path / "cache" / "probes" / "k" / "entry.json"
    raw = {"deep": "{\"a\": " + _deep_json(50_000) + "}", "huge-number": "{\"a\": " + "9" * 5000 + "}"}.get(
        content, content)
    path.write_bytes(b"{\"a\": \"\xff\"}" if content == "bad-utf8" else raw.encode())
    _reseal(path)
    # execute
    loaded = cache.load_json("probes", "k")
    # assert: reported, recomputed, and a new save is read back
    assert loaded is None
    assert any(m.startswith("  corrupt cache entry: ") and str(path) in m for m in messages), messages
    cache.save_json("probes", "k", {"name": "L1"})
    assert cache.load_json("probes", "k") == {"name": "L1"}


def test_an_entry_shaped_wrong_for_its_reader_is_recomputed(tmp_path):
    # setup: valid JSON, a valid hash, but not a timing (time_files would fail on it with a KeyError)
    from edgekit.stages.measure import _timing_problem

    messages = []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_json("timings", "k", {"latency_ms": "fast"})
    # execute
    loaded = cache.load_json("timings", "k", _timing_problem)
    # assert
    assert loaded is None and any("is not a timing" in m for m in messages), messages


@pytest.mark.parametrize("replaced", ["arrays.npz", "arrays.npz.sha256", "entry.json", "entry.json.sha256",
                                      "folder"])
def test_a_cache_file_replaced_by_a_fifo_is_recomputed_without_hanging(replaced, tmp_path):
    # setup: a FIFO no one writes where the cache keeps a file (a blocking open would never return)
    messages = []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_arrays("a", "k", {"x": np.arange(3)})
    cache.save_json("j", "k", {"x": 1})
    folder = tmp_path / "cache" / ("j" if replaced.startswith("entry") else "a") / "k"
    target = folder if replaced == "folder" else folder / replaced
    if replaced == "folder":
        shutil.rmtree(folder)
    else:
        target.unlink()
    os.mkfifo(target)
    # execute
    with no_hang(20):
        loaded = cache.load_json("j", "k") if replaced.startswith("entry") else cache.load_arrays("a", "k")
        # and the recompute replaces the FIFO
        if replaced.startswith("entry"):
            cache.save_json("j", "k", {"x": 2})
            again = cache.load_json("j", "k")
        else:
            cache.save_arrays("a", "k", {"x": np.arange(4)})
            again = cache.load_arrays("a", "k")
    # assert
    assert loaded is None
    assert any("a FIFO (named pipe)" in m and str(folder) in m for m in messages), messages
    assert again is not None and not any(p.is_fifo() for p in (tmp_path / "cache").rglob("*"))


def test_a_checkpoint_replaced_by_a_fifo_or_another_networks_weights_starts_training_over(tmp_path):
    # setup: final.pt a FIFO, checkpoint.pt another network's weights with a sidecar that passes
    folder = tmp_path / "student"
    folder.mkdir()
    os.mkfifo(folder / FINAL)
    write_checked(folder / CHECKPOINT, lambda tmp: torch.save(
        {"step": 1, "model": torch.nn.Linear(9, 9).state_dict(), "optimizer": {}, "scheduler": {},
         "loss_history": [], "running_loss": 1.0}, tmp))
    model, messages = torch.nn.Linear(4, 2), []
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def step_loss(net, indices):
        loss = net(torch.ones(len(indices), 4)).pow(2).mean()
        return loss, {"mse": float(loss.detach())}

    # execute
    with no_hang(60):
        history = train(model, 8, step_loss, TrainSettings(epochs=1, batch_size=4, lr=1e-2), folder, "tiny",
                        echo=messages.append)
    # assert: both reported, training ran from the start (the model was not half-loaded first)
    text = "\n".join(messages)
    assert f"{folder / FINAL} is a FIFO (named pipe)" in text and "starting this training over" in text
    assert f"{folder / CHECKPOINT} holds the weights of another network" in text
    assert history["steps"] == 2 and history["resumed_from"] == 0 and history["cached"] is False
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_failed_cache_write_leaves_no_temporary_files(tmp_path):
    # setup: a write that fails half-way, as a full disk makes it
    folder = tmp_path / "entry"
    folder.mkdir()

    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    # execute
    with pytest.raises(OSError):
        write_checked(folder / "arrays.npz", full_disk)
    # assert: nothing left behind, not even a sidecar
    assert list(folder.iterdir()) == []


def test_a_cache_folder_symlinked_outside_is_replaced_not_written_through(tmp_path):
    # setup: an entry folder that is a symlink to a folder outside the cache, holding a valid-looking entry
    outside, messages = tmp_path / "outside", []
    outside.mkdir()
    planted = Cache(tmp_path / "elsewhere")
    planted.save_json("probes", "k", {"planted": True})
    shutil.copytree(tmp_path / "elsewhere" / "probes" / "k", outside, dirs_exist_ok=True)
    (tmp_path / "cache" / "probes").mkdir(parents=True)
    (tmp_path / "cache" / "probes" / "k").symlink_to(outside)
    before = _snapshot(outside)
    cache = Cache(tmp_path / "cache", messages.append)
    # execute
    loaded = cache.load_json("probes", "k")
    cache.save_json("probes", "k", {"planted": False})
    # assert: not read through the link, and the new entry is inside the cache
    assert loaded is None and any("a symbolic link" in m for m in messages), messages
    assert _snapshot(outside) == before
    assert not (tmp_path / "cache" / "probes" / "k").is_symlink()
    assert cache.load_json("probes", "k") == {"planted": False}


def test_two_writers_and_a_reader_sharing_one_cache_never_read_a_mixed_entry(tmp_path):
    # setup: two "runs" rewrite the same entries while a third reads them; each value is self-consistent
    root = tmp_path / "cache"
    stop, problems, loaded = threading.Event(), [], []

    def writer(seed):
        cache = Cache(root)
        for i in range(150):
            size = (seed * 1000 + i) % 997 + 1
            cache.save_json("shared", "k", {"n": size, "pad": "x" * size * 50})
            cache.save_arrays("shared", "k", {"x": np.full(size * 10, size, dtype=np.int64)})

    def reader():
        cache = Cache(root)
        while not stop.is_set():
            value = cache.load_json("shared", "k")
            if value is not None:
                loaded.append(1)
                if len(value["pad"]) != value["n"] * 50:
                    problems.append(value["n"])
            arrays = cache.load_arrays("shared", "k")
            if arrays is not None and not (arrays["x"] == len(arrays["x"]) // 10).all():
                problems.append("arrays")

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
    watcher = threading.Thread(target=reader)
    # execute
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join(30)
    # assert: every value read was one writer's whole value; no temporary is left behind
    assert not problems and loaded
    assert not [p.name for p in (root / "shared" / "k").iterdir() if ".tmp-" in p.name]


def test_arrays_without_what_their_reader_needs_are_recomputed(tmp_path):
    # setup: a hash-valid arrays.npz lacking the array its reader indexes (a KeyError later, as a traceback)
    messages = []
    cache = Cache(tmp_path / "cache", messages.append)
    cache.save_arrays("static-tokens", "k", {"other": np.arange(3)})

    def needs_ids(arrays):
        return None if "ids" in arrays else "holds no 'ids' array"

    # execute
    loaded = cache.load_arrays("static-tokens", "k", needs_ids)
    # assert
    assert loaded is None and any("holds no 'ids' array; edgekit recomputes it" in m for m in messages), messages
    assert cache.load_arrays("static-tokens", "k") is not None  # without the check, as before
