"""Teacher folders from someone else, read defensively: malformed or hostile files in a model folder get one
line naming the file, what is wrong and the fix, from `edgekit export`, `edgekit recipe check` and `edgekit
distill-and-export` alike; never a traceback, never the folder's code run, never a file outside it read, never
an allocation its weights cannot back, never a read that blocks."""

import ast
import json
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.errors import InvalidModelFile
from edgekit.modeling.models import resolve_model, teacher_problem
from edgekit.modeling.sentence_config import load_dense, read_sentence_config
from edgekit.recipe import TeacherSpec
from edgekit.testing import tiny_recipe, write_sentence_folder
from edgekit.trust import reading

FIX = "restore it from the model's original files"


@pytest.fixture
def teacher(tiny_bert, tmp_path):
    """A fresh copy of the tiny BERT, for a test to break."""
    return Path(shutil.copytree(tiny_bert, tmp_path / "teacher"))


def _invoke(*args, stdin=None):
    """The real CLI in-process, failing the test (instead of hanging it) if a read blocks."""
    def hung(signum, frame):
        raise AssertionError(f"edgekit {args[0]} hung (a blocking read?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], input=stdin)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(f"a film number {i} with some words" for i in range(16)) + "\n")
    return path


def _export(folder, tmp_path, stdin=None):
    return _invoke("export", folder, "--task", "feature-extraction", "-o", tmp_path / "out", "--inputs",
                   _texts(tmp_path), "--samples", 8, stdin=stdin)


def _recipe_file(folder, tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(folder).model_dump(mode="json"), sort_keys=False))
    return path


def _check(folder, tmp_path, stdin=None):
    return _invoke("recipe", "check", _recipe_file(folder, tmp_path), stdin=stdin)


def _distill(folder, tmp_path, stdin=None):
    return _invoke("distill-and-export", _recipe_file(folder, tmp_path), "--out", tmp_path / "run",
                   "--cache-dir", tmp_path / "cache", stdin=stdin)


def _assert_refused(result, *expected):
    """One clear error: exit non-zero, no traceback, every expected piece in the output."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError), result.output
    assert not result.exception or isinstance(result.exception, SystemExit), repr(result.exception)
    for piece in expected:
        assert piece in result.output, (piece, result.output)


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _truncate(path: Path) -> None:
    text = path.read_text() if path.exists() else '{"unk_token": "[UNK]", "pad_token": "[PAD]"}'
    path.write_text(text[: len(text) // 2])


def _sharded(folder: Path) -> Path:
    """The model's weights as a one-shard checkpoint with its index."""
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "model-00001-of-00001.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder / "model.safetensors.index.json"


def _sentence_file(folder: Path, name: str) -> Path:
    write_sentence_folder(folder, "mean")
    path = folder / name
    path.write_text(json.dumps({"max_seq_length": 64}) if not path.exists() else path.read_text())
    return path


# Each JSON file a teacher folder's loaders parse, truncated half-way.
TRUNCATED = {
    "config.json": lambda f: f / "config.json",
    "tokenizer.json": lambda f: f / "tokenizer.json",
    "tokenizer_config.json": lambda f: f / "tokenizer_config.json",
    "special_tokens_map.json": lambda f: f / "special_tokens_map.json",
    "modules.json": lambda f: _sentence_file(f, "modules.json"),
    "sentence_bert_config.json": lambda f: _sentence_file(f, "sentence_bert_config.json"),
    "1_Pooling/config.json": lambda f: _sentence_file(f, "1_Pooling/config.json"),
    "model.safetensors.index.json": _sharded,
}


@pytest.mark.parametrize("name", TRUNCATED)
def test_a_truncated_json_file_in_the_teacher_folder_is_refused_naming_it_by_every_command(name, teacher, tmp_path):
    # setup
    path = TRUNCATED[name](teacher)
    _truncate(path)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert: the file, what is wrong, the fix; nothing written
    for result in (exported, checked):
        _assert_refused(result, f"{path} is not valid JSON", FIX)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_json_nested_thousands_deep_is_refused_not_a_recursion_error(name, teacher, tmp_path):
    # setup
    (teacher / name).write_text("[" * 50_000 + "]" * 50_000)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / name} nests lists or objects more than 100 deep", FIX)
        assert "RecursionError" not in result.output


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_multi_gigabyte_json_file_is_refused_by_its_size_unread(name, teacher, tmp_path):
    # setup: a sparse 3 GB file (no disk used); reading it would take gigabytes of memory
    with open(teacher / name, "r+b") as f:
        f.truncate(3 << 30)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / name} is 3,221,225,472 bytes, more than the", FIX)


def _rewrite_header(folder: Path, change) -> None:
    """Replace model.safetensors' header by change(header, data) -> (length field, header bytes, data)."""
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8:8 + length]), raw[8 + length:]
    field, text, data = change(header, data)
    path.write_bytes(struct.pack("<Q", len(text) if field is None else field) + text + data)


def _bigger_shape(header, data):
    header["embeddings.word_embeddings.weight"]["shape"][0] *= 1000
    return None, json.dumps(header).encode(), data


def _offsets_past_the_file(header, data):
    entry = header["embeddings.word_embeddings.weight"]
    entry["data_offsets"] = [entry["data_offsets"][0], len(data) + 10**12]
    return None, json.dumps(header).encode(), data


LYING_HEADERS = {
    "length beyond the file": (lambda h, d: (10**12, json.dumps(h).encode(), d),
                               "its header claims 1,000,000,000,000 bytes, but the file holds"),
    "malformed header": (lambda h, d: (None, json.dumps(h).encode()[:-5], d), "its header is not valid JSON"),
    "header not an object": (lambda h, d: (None, b"[1, 2, 3]", d), "its header holds a JSON array"),
    "shape the offsets cannot hold": (_bigger_shape, "but its shape and dtype need"),
    "offsets past the file": (_offsets_past_the_file, "(truncated, or the header lies)"),
    "truncated data": (lambda h, d: (None, json.dumps(h).encode(), d[: len(d) // 2]),
                       "(truncated, or the header lies)"),
    "unknown dtype": (lambda h, d: (None, json.dumps({k: {**v, "dtype": "Q99"} if k != "__metadata__" else v
                                                      for k, v in h.items()}).encode(), d), "is not {\"dtype\""),
}


@pytest.mark.parametrize("case", LYING_HEADERS)
def test_a_safetensors_file_whose_header_lies_is_refused_before_loading(case, teacher, tmp_path):
    # setup
    change, expected = LYING_HEADERS[case]
    _rewrite_header(teacher, change)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert: named by the check, not a raw SafetensorError from the loader
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'model.safetensors'}: ", expected, FIX)
        assert "SafetensorError" not in result.output


@pytest.mark.parametrize("shard, expected", [
    ("../outside.safetensors", "climbs out with '..'"),
    ("/etc/passwd", "an absolute path"),
    ("model-00002-of-00002.safetensors", "does not exist"),
])
def test_a_sharded_index_naming_a_shard_outside_the_folder_or_missing_is_refused(shard, expected, teacher, tmp_path):
    # setup: a real shard outside the folder, and the index naming it
    index = _sharded(teacher)
    shutil.copy(teacher / "model-00001-of-00001.safetensors", tmp_path / "outside.safetensors")
    _edit_json(index, weight_map={"embeddings.word_embeddings.weight": shard})
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, expected)
        assert "model.safetensors.index.json" in result.output or "weights file" in result.output


def test_a_sharded_checkpoint_inside_the_folder_still_loads(teacher, tmp_path):
    # setup: a real sharded checkpoint, every tensor in its one shard
    from safetensors import safe_open

    index = _sharded(teacher)
    with safe_open(teacher / "model-00001-of-00001.safetensors", "pt") as f:
        names = list(f.keys())
    _edit_json(index, weight_map={name: "model-00001-of-00001.safetensors" for name in names})
    # execute
    exported = _export(teacher, tmp_path)
    # assert
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_a_vocab_size_the_weights_cannot_back_is_refused_before_allocating(teacher, tmp_path):
    # setup: the weights hold 168 rows; config.json asks for a billion (128 GB of float32 at width 32)
    _edit_json(teacher / "config.json", vocab_size=1_000_000_000)
    # execute
    exported, checked, distilled = _export(teacher, tmp_path), _check(teacher, tmp_path), _distill(teacher, tmp_path)
    # assert: the figure the config implies and what the weights hold; no attempt to allocate it
    for result in (exported, checked, distilled):
        _assert_refused(result, f"{teacher / 'config.json'}: describes a model of 119.2 GB of parameters",
                        "the folder's weights hold 0.1 MB", "restore config.json")
        assert "can't allocate memory" not in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_a_layer_count_no_model_has_is_refused_without_building_it(teacher, tmp_path):
    # setup
    _edit_json(teacher / "config.json", num_hidden_layers=10_000_000)
    # execute
    checked = _check(teacher, tmp_path)
    # assert
    _assert_refused(checked, f"{teacher / 'config.json'}: num_hidden_layers is 10,000,000, more than any real model")


def test_a_teacher_larger_than_the_machines_memory_is_refused_saying_both_figures(teacher, tmp_path, monkeypatch):
    # setup: a machine of 64 KB (the tiny teacher is about 115 KB)
    monkeypatch.setattr(reading, "machine_memory", lambda: 1 << 16)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'config.json'}: the model it describes would need",
                        "more than this machine's 0.1 MB", "use a smaller teacher")


def test_a_config_slightly_off_its_weights_is_refused_naming_the_tensor_and_both_shapes(teacher, tmp_path):
    # setup: 200 rows declared, 168 stored: within what the size check lets through
    _edit_json(teacher / "config.json", vocab_size=200)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert: before transformers loads it (which would point at a report in its log)
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'config.json'}: declares embeddings.word_embeddings.weight of shape "
                                "[200, 32], but the weights hold it as [168, 32]", "restore config.json")
        assert "Loading weights" not in result.output


def test_a_broken_pytorch_bin_checkpoint_fails_as_one_error_naming_the_folder(teacher, tmp_path):
    # setup: no safetensors, a .bin that is not a torch file (no header to check: the loader finds it)
    (teacher / "model.safetensors").unlink()
    (teacher / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip archive")
    # execute
    exported = _export(teacher, tmp_path)
    # assert
    _assert_refused(exported, f"'{teacher}' cannot be loaded as AutoModel")
    assert [line for line in exported.output.splitlines() if line.startswith("error:")] == \
        [exported.output.strip().splitlines()[-1]]


def _custom_code(folder: Path, config_name: str, marker: Path) -> None:
    """A model folder whose `config_name` names custom code that, if ever imported, writes `marker`."""
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import BertConfig as EvilConfig\n"
    (folder / "evil.py").write_text(code)
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.Tok", None]}
    changes = {"auto_map": auto_map} | ({"model_type": "evil"} if config_name == "config.json" else {})
    _edit_json(folder / config_name, **changes)


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_custom_code_in_a_teacher_folder_is_never_run_even_when_the_user_answers_yes(config_name, teacher, tmp_path):
    # setup
    marker = tmp_path / "ran"
    _custom_code(teacher, config_name, marker)
    # execute: stdin says yes to transformers' "Do you wish to run the custom code?", should it ever ask
    results = [run(teacher, tmp_path, stdin="y\n") for run in (_export, _check, _distill)]
    # assert
    for result in results:
        _assert_refused(result, f"{teacher / config_name}: has an \"auto_map\"", "custom code is never run")
        assert "Do you wish to run the custom code" not in result.output
    assert not marker.exists()


def test_a_model_type_transformers_does_not_ship_is_refused_up_front(teacher, tmp_path):
    # setup
    _edit_json(teacher / "config.json", model_type="my-own-bert")
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'config.json'}: model_type 'my-own-bert' is not an architecture",
                        "custom code is never run")


def _loader_calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in ("from_pretrained", "pipeline", "main_export"):
                yield node


def test_every_transformers_loading_call_in_edgekit_says_trust_remote_code_false():
    # setup
    root = Path(__file__).parent.parent / "edgekit"
    missing = []
    # execute: every from_pretrained / pipeline / optimum export call in the package
    for path in sorted(root.rglob("*.py")):
        for call in _loader_calls(ast.parse(path.read_text(encoding="utf-8"))):
            keywords = {k.arg: k.value for k in call.keywords}
            value = keywords.get("trust_remote_code")
            if not (isinstance(value, ast.Constant) and value.value is False):
                missing.append(f"{path.relative_to(root)}:{call.lineno}")
    # assert: left out (None), transformers would ask the user on a terminal whether to run the folder's code
    assert missing == []


def test_a_modules_json_path_climbing_out_of_the_folder_is_refused_through_the_cli(teacher, tmp_path):
    # setup: another model beside the teacher, which modules.json points at
    write_sentence_folder(teacher, "mean")
    shutil.copytree(teacher / "1_Pooling", tmp_path / "other-model")
    modules = json.loads((teacher / "modules.json").read_text())
    modules[1]["path"] = "../other-model"
    (teacher / "modules.json").write_text(json.dumps(modules))
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'modules.json'}: module path '../other-model' is outside the model "
                                "folder", "copy that module into the folder")


def test_a_transformer_subfolder_that_is_a_symlink_out_of_the_folder_is_refused(teacher, tiny_bert, tmp_path):
    # setup: modules.json names 0_Transformer, a link to another model's folder
    write_sentence_folder(teacher, "mean")
    modules = json.loads((teacher / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (teacher / "modules.json").write_text(json.dumps(modules))
    (teacher / "0_Transformer").symlink_to(tiny_bert, target_is_directory=True)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, str(teacher / "0_Transformer"), "outside", str(tiny_bert),
                        "instead of linking to it")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors", "vocab.txt"])
def test_a_teacher_file_that_is_a_symlink_out_of_the_folder_is_refused(name, teacher, tiny_bert, tmp_path):
    # setup: the same file, elsewhere, linked in
    (teacher / name).unlink()
    (teacher / name).symlink_to(tiny_bert / name)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"'{name}', which is outside", f"through a symlink it is {tiny_bert / name}",
                        "copy the file into the model folder")


def test_a_symlink_loop_in_the_teacher_folder_is_refused(teacher, tmp_path):
    # setup
    (teacher / "tokenizer.json").unlink()
    (teacher / "tokenizer.json").symlink_to(teacher / "tokenizer.json")
    # execute
    checked = _check(teacher, tmp_path)
    # assert
    _assert_refused(checked, "'tokenizer.json', which does not resolve inside")


def test_a_peft_adapter_folder_naming_a_base_model_elsewhere_is_refused(teacher, tmp_path):
    # setup
    (teacher / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/somewhere/else",
                                                             "peft_type": "LORA"}))
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / 'adapter_config.json'}: the folder is a PEFT adapter",
                        "/somewhere/else", "merge_and_unload")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "modules.json"])
def test_a_fifo_in_place_of_a_teacher_file_is_refused_without_blocking(name, teacher, tmp_path):
    # setup: opening a FIFO for reading blocks until someone writes to it (the CLI would hang forever)
    if name == "modules.json":
        write_sentence_folder(teacher, "mean")
    (teacher / name).unlink()
    os.mkfifo(teacher / name)
    # execute
    exported, checked = _export(teacher, tmp_path), _check(teacher, tmp_path)
    # assert
    for result in (exported, checked):
        _assert_refused(result, f"{teacher / name} is a FIFO (named pipe), not a regular file")


def test_a_dense_module_whose_config_the_weights_cannot_back_is_refused_before_allocating(teacher):
    # setup: a 32 -> 16 Dense layer whose config.json says a million by a million (4 TB of float32)
    write_sentence_folder(teacher, "mean", dense=[(32, 16)])
    _edit_json(teacher / "2_Dense" / "config.json", in_features=1_000_000, out_features=1_000_000)
    dense = read_sentence_config(teacher).dense[0]
    # execute / assert
    with pytest.raises(InvalidModelFile, match="not the .* its config.json declares") as refused:
        load_dense(dense)
    assert str(teacher / "2_Dense" / "model.safetensors") in str(refused.value)


def test_a_dense_module_whose_safetensors_header_lies_is_refused(teacher):
    # setup
    write_sentence_folder(teacher, "mean", dense=[(32, 16)])
    path = teacher / "2_Dense" / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10**9) + path.read_bytes()[8:])
    dense = read_sentence_config(teacher).dense[0]
    # execute / assert
    with pytest.raises(InvalidModelFile, match="its header claims 1,000,000,000 bytes"):
        load_dense(dense)


def test_a_hugging_face_cache_snapshot_whose_files_link_into_its_blobs_is_accepted(tiny_bert, tmp_path):
    # setup: the hub cache's layout, every file of a snapshot a symlink into the repository's blobs/
    repo = tmp_path / "hub" / "models--owner--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(tiny_bert.iterdir())):
        shutil.copy(path, repo / "blobs" / f"blob{i}")
        (snapshot / path.name).symlink_to(Path("../..") / "blobs" / f"blob{i}")
    # execute
    problem = teacher_problem(TeacherSpec(model=str(snapshot), max_length=64))
    # assert
    assert problem is None
    assert resolve_model(str(snapshot)).local


def test_a_hub_id_is_not_checked_as_a_local_folder():
    # setup / execute: no such folder here, so nothing local to check (it is checked when downloaded)
    source = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    # assert
    assert not source.local
    assert teacher_problem(TeacherSpec(model="sentence-transformers/all-MiniLM-L6-v2")) is None
