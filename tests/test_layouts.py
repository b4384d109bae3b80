"""The layouts write_layouts puts in a bundle, each loaded by the real library that reads it: model2vec's
StaticModel (static students) here, transformers.js (`web`) for hf/; sentence-transformers' ONNX backend in
tests/test_layout_st.py (the oldest stack's venv)."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from edgekit.errors import BundleError
from edgekit.modeling.networks import StaticModel, TextModel
from edgekit.runtime.export import export_network
from edgekit.stages.layouts import readme_lines, resolve_layouts, text_feeds, write_layouts

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 16
TEXTS = ["a good film", "the worst movie of the year", "funny and great",
         "a ☃ film",  # ☃ is not in the tiny vocabulary: [UNK]
         " ".join("abcdefghijklmnopqrstuvwxyz" * 2)]  # 52 tokens, past max_length


def _ort_embedding(path: Path, tokenizer_folder: Path, texts: list[str] = TEXTS) -> np.ndarray:
    from tokenizers import Tokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = text_feeds(Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json")), texts, MAX_LENGTH, names)
    return session.run(["embedding"], feeds)[0]


def _quantized(path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name("model.int8-dynamic.onnx")
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    return out


# static students: model2vec/ and static-npy/

OOV = "a zqxv film"  # a word the tiny vocabulary splits into pieces the student's pruned vocabulary dropped
EMPTY = "☃"  # only [UNK]: no token the mean counts


def _static_student(tokenizer, special_rows: float = 0.5, bias: float = 0.3, counted: bool = True,
                    dense: torch.nn.Module | None = None) -> tuple[StaticModel, object]:
    """A trained-like static student as edgekit builds one (students.build_static_student): a vocabulary pruned
    to the first texts' tokens (the rest map to [UNK]'s row), the special tokens left out of the mean
    (`counted`; False: a student from before edgekit left them out), then what training leaves: random rows,
    [CLS]/[SEP]/[UNK] rows `special_rows` away from zero and a projection bias `bias`."""
    from edgekit.modeling.static import vocabulary

    size = len(tokenizer)
    vocab = vocabulary(tokenizer, size, "data", tokenizer(TEXTS[:3], add_special_tokens=False)["input_ids"])
    torch.manual_seed(0)
    student = StaticModel(torch.from_numpy(vocab.remap), vocab.rows, 8, 16, {"sentiment": torch.nn.Linear(16, 2)},
                          normalize=True, dense=dense,
                          uncounted=tuple(tokenizer.all_special_ids) if counted else ())
    with torch.no_grad():
        specials = vocab.remap[tokenizer.all_special_ids]
        student.backbone.table.weight[specials] += special_rows * torch.randn(len(specials), 8)
        student.projection.bias.copy_(bias * torch.randn(16))
    return student.eval(), vocab


def _export(student, tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    batch = dict(tokenizer(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np"))
    export_network(student, folder / "model.onnx", [{name: batch[name] for name in student.input_names}])
    return folder / "model.onnx"


def _run_readme_block(lines: list[str], heading: str, folder: Path) -> dict:
    """Run the README section's python block under `heading` from the bundle folder: its variables."""
    start = lines.index(next(line for line in lines if line.startswith(heading)))
    code = lines.index("```python", start)
    block = "\n".join(lines[code + 1:lines.index("```", code + 1)])
    here = Path.cwd()
    try:
        import os

        os.chdir(folder)
        scope = {}
        exec(block, scope)  # noqa: S102 - the README's own snippet, run as a user runs it
        return scope
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def static_student(tokenizer, tmp_path_factory):
    student, vocab = _static_student(tokenizer)
    return _export(student, tokenizer, tmp_path_factory.mktemp("static")), vocab


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8-dynamic"])
def test_model2vec_loads_a_trained_static_students_layout_and_gives_the_files_embeddings(static_student, tiny_bert,
                                                                                          tokenizer, tmp_path,
                                                                                          quantized):
    model2vec = pytest.importorskip("model2vec", reason="model2vec is not installed (make setup installs it)")
    from safetensors.numpy import load_file

    # setup: trained special rows and bias, a pruned vocabulary; texts with [UNK], pruned pieces, past max_length
    file, vocab = static_student
    model = _quantized(file) if quantized else file
    texts = [*TEXTS, OOV]
    assert tokenizer.unk_token_id in tokenizer(TEXTS[3])["input_ids"]
    assert any(vocab.remap[i] == vocab.unk_row for i in tokenizer(OOV, add_special_tokens=False)["input_ids"])
    # execute: written by default (auto), loaded as model2vec loads a folder
    record = write_layouts(tmp_path, model, tiny_bert, texts, variant="int8-dynamic" if quantized else "fp32",
                           static=True, max_length=MAX_LENGTH)
    loaded = model2vec.StaticModel.from_pretrained(tmp_path / "model2vec")
    # assert: model2vec's own encode gives the ONNX embeddings, exactly up to float rounding
    layout = record["written"]["model2vec"]
    tolerance = 2e-2 if quantized else 1e-5
    np.testing.assert_allclose(loaded.encode(texts), _ort_embedding(model, tiny_bert, texts), atol=tolerance)
    assert layout["checked"]["exact"] and layout["checked"]["max_abs_diff"] <= tolerance
    assert layout["checked"]["counted_by"] != "attention_mask"  # the graph's own `counted` weights
    assert record["on_request"] == ["static-npy"] and not (tmp_path / "static-npy").exists()
    # the distinct rows and model2vec's mapping (the format of its vocabulary-quantized models), not vocab x width
    tensors = load_file(tmp_path / "model2vec" / "model.safetensors")
    assert tensors["embeddings"].shape == (vocab.rows, 16) and vocab.rows < len(tokenizer)
    assert tensors["mapping"].shape == (len(tokenizer),) and loaded.vocabulary_quantization == vocab.rows
    assert {"model.safetensors", "tokenizer.json", "config.json"} == set(layout["files"])
    assert str(tmp_path) not in json.dumps(record)  # names relative to the bundle
    # the one difference left, recorded: a text with no counted token is zeros to model2vec, the bias to the graph
    assert "model2vec gives zeros" in " ".join(layout["checked"]["differs_for"])
    assert not loaded.encode([EMPTY]).any() and _ort_embedding(model, tiny_bert, [EMPTY]).any()


def test_the_mapping_is_model2vecs_public_format(static_student, tiny_bert, tmp_path):
    model2vec = pytest.importorskip("model2vec", reason="model2vec is not installed")
    from safetensors.numpy import load_file

    # setup
    write_layouts(tmp_path / "bundle", static_student[0], tiny_bert, TEXTS, static=True, max_length=MAX_LENGTH)
    ours = load_file(tmp_path / "bundle" / "model2vec" / "model.safetensors")
    # execute: model2vec's public constructor (token_mapping) and save_pretrained write the same folder
    loaded = model2vec.StaticModel.from_pretrained(tmp_path / "bundle" / "model2vec")
    model2vec.StaticModel(loaded.embedding, loaded.tokenizer, token_mapping=loaded.token_mapping, normalize=True,
                          max_length=loaded.max_length).save_pretrained(tmp_path / "theirs")
    theirs = load_file(tmp_path / "theirs" / "model.safetensors")
    # assert
    assert set(theirs) == set(ours) == {"embeddings", "mapping"}
    np.testing.assert_array_equal(theirs["mapping"], ours["mapping"])
    again = model2vec.StaticModel.from_pretrained(tmp_path / "theirs")
    np.testing.assert_array_equal(again.encode(TEXTS), loaded.encode(TEXTS))


def test_static_npy_and_the_readme_snippets_give_the_files_embeddings(static_student, tiny_bert, tmp_path):
    pytest.importorskip("model2vec", reason="model2vec is not installed")
    # setup
    file = static_student[0]
    # execute
    record = write_layouts(tmp_path, file, tiny_bert, TEXTS, wanted=["model2vec", "static-npy"], static=True,
                           max_length=MAX_LENGTH)
    lines = readme_lines(record)
    # assert: the full-vocabulary float32 table beside its tokenizer; each README snippet, run from the bundle
    # folder, gives model.onnx's embedding of its text
    table = np.load(tmp_path / "static-npy" / "embeddings.npy")
    assert table.dtype == np.float32 and table.shape == (len(AutoTokenizer.from_pretrained(tiny_bert)), 16)
    assert record["on_request"] == [] and record["written"]["static-npy"]["checked"]["exact"]
    npy = _run_readme_block(lines, "### static-npy/", tmp_path)["vector"]
    np.testing.assert_allclose(npy, _ort_embedding(file, tiny_bert, ["a text"])[0], atol=1e-5)
    m2v = _run_readme_block(lines, "### model2vec/", tmp_path)["embeddings"]
    np.testing.assert_allclose(m2v, _ort_embedding(file, tiny_bert, ["first text", "second text"]), atol=1e-5)
    assert lines[0] == "## Other layouts in this folder" and "on request" not in "\n".join(lines)
    assert str(tmp_path) not in "\n".join(lines)


def test_a_static_student_that_counts_its_special_tokens_is_refused_or_written_as_an_approximation(tokenizer,
                                                                                                  tiny_bert,
                                                                                                  tmp_path):
    # setup: a student from before edgekit left [CLS]/[SEP] out of the mean, their rows trained
    student, _ = _static_student(tokenizer, counted=False)
    model = _export(student, tokenizer, tmp_path / "student")
    # execute / assert: refused by default, naming the file, why and the fix
    with pytest.raises(BundleError, match=r"model\.onnx: .*special tokens.*Fix: leave the static layouts out"):
        write_layouts(tmp_path / "bundle", model, tiny_bert, TEXTS, static=True, max_length=MAX_LENGTH)
    assert not (tmp_path / "bundle" / "model2vec").exists()
    record = write_layouts(tmp_path / "bundle", model, tiny_bert, TEXTS, static=True, max_length=MAX_LENGTH,
                           allow_approximate=True)["written"]["model2vec"]
    assert not record["checked"]["exact"] and record["checked"]["approximation"]
    assert record["checked"]["max_abs_diff"] > 1e-4


def test_a_static_student_with_a_non_linear_step_after_the_mean_gets_no_static_layout(tokenizer, tiny_bert,
                                                                                        tmp_path):
    # setup: a Dense layer with an activation after the projection
    student, _ = _static_student(tokenizer, dense=torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh()))
    model = _export(student, tokenizer, tmp_path / "student")
    # execute / assert
    with pytest.raises(BundleError, match=r"model\.onnx: what follows the mean .* not linear"):
        write_layouts(tmp_path / "bundle", model, tiny_bert, TEXTS, static=True, max_length=MAX_LENGTH)


@pytest.mark.parametrize(("asked", "static", "expected"), [
    ("auto", True, ["model2vec"]), ("auto", False, []), (None, True, ["model2vec"]),
    (["static-npy", "model2vec", "static-npy"], True, ["static-npy", "model2vec"]), (["hf"], False, ["hf"]),
    ([], True, [])])
def test_layouts_resolve_auto_per_student_kind(asked, static, expected):
    assert resolve_layouts(asked, static=static) == expected


@pytest.mark.parametrize(("asked", "static", "message"), [
    (["hf"], True, "layout hf: does not apply to a static-embedding student, which can have model2vec, static-npy"),
    (["model2vec"], False, ("layout model2vec: does not apply to a sentence-encoder transformer student, which can "
                           "have hf")),
    (["onnx"], False, "layout 'onnx': not one of hf, model2vec, static-npy")])
def test_a_layout_that_does_not_apply_is_refused_naming_what_does(asked, static, message):
    with pytest.raises(BundleError, match=re.escape(message)):
        resolve_layouts(asked, static=static)


def test_the_recipe_names_layouts_and_defaults_to_auto():
    from pydantic import ValidationError

    from edgekit.recipe import ExportSpec

    assert ExportSpec().layouts == "auto"
    assert ExportSpec(layouts=["hf"]).layouts == ["hf"]
    with pytest.raises(ValidationError):
        ExportSpec(layouts=["onnx"])


# transformer students: hf/

@pytest.fixture(scope="module")
def transformer_file(tiny_bert, tokenizer, tmp_path_factory):
    """A transformer student's file as edgekit exports it: `embedding` mean-pooled and normalized in the graph."""
    student = TextModel(AutoModel.from_pretrained(tiny_bert), "sentence-encoder", {}, "mean", True).eval()
    return _export(student, tokenizer, tmp_path_factory.mktemp("transformer"))


def test_the_hf_layout_outputs_the_tokens_the_graph_pools(transformer_file, tiny_bert, tmp_path):
    # execute
    record = write_layouts(tmp_path, transformer_file, tiny_bert, TEXTS, wanted=["hf"],
                           config=tiny_bert / "config.json", max_length=MAX_LENGTH)["written"]["hf"]
    # assert: the sentence-transformers files and the file at transformers.js's name, with last_hidden_state
    out = tmp_path / "hf"
    assert {key: record["transformers.js"][key] for key in ("dtype", "file", "pooling", "normalize")} == \
        {"dtype": "fp32", "file": "onnx/model.onnx", "pooling": "mean", "normalize": True}
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == MAX_LENGTH
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == MAX_LENGTH
    assert json.loads((out / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"]
    assert [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())] == \
        ["Transformer", "Pooling", "Normalize"]
    session = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()][-1] == "last_hidden_state"
    assert record["checked"]["max_abs_diff"] <= 1e-4


def test_a_student_without_its_config_gets_no_hf_layout(transformer_file, tiny_bert, tmp_path):
    with pytest.raises(BundleError, match="needs its config.json"):
        write_layouts(tmp_path, transformer_file, tiny_bert, TEXTS, wanted=["hf"], max_length=MAX_LENGTH)


def test_a_transformer_gets_hf_only_on_request_and_the_readme_says_how(transformer_file, tiny_bert, tmp_path):
    # execute: auto writes nothing (hf/ copies the model file) and needs no texts
    record = write_layouts(tmp_path, transformer_file, tiny_bert, [], max_length=MAX_LENGTH)
    lines = readme_lines(record)
    # assert
    assert record == {"written": {}, "on_request": ["hf"]} and list(tmp_path.iterdir()) == []
    assert lines[0] == "## Other layouts in this folder"
    assert "`edgekit bundle RUN NAME --layout hf`" in lines[-2] and "`export.layouts: [hf]`" in lines[-2]


def test_the_readme_loads_the_hf_layout_offline(transformer_file, tiny_bert, tmp_path):
    # execute
    record = write_layouts(tmp_path, transformer_file, tiny_bert, TEXTS, wanted=["hf"],
                           config=tiny_bert / "config.json", max_length=MAX_LENGTH)
    text = "\n".join(readme_lines(record))
    # assert: both snippets, local files only, the file and options the record names
    assert "env.allowRemoteModels = false;" in text and "env.localModelPath = './';" in text
    assert "pipeline('feature-extraction', 'hf', { dtype: 'fp32' })" in text
    assert "{ pooling: 'mean', normalize: true }" in text
    assert 'SentenceTransformer("hf", backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"}' in text
    assert "optimum-onnx" in text and "transformers < 4.58" in text and "on request" not in text
    assert str(tmp_path) not in text


def _node_embeddings(models: Path, name: str, dtype: str, texts: list[str]) -> np.ndarray:
    """transformers.js's feature-extraction pipeline on models/name, run by Node from a scratch folder under
    web/ (so that the script's import finds web/node_modules)."""
    if shutil.which("node") is None or not (ROOT / "web/node_modules/@huggingface/transformers").is_dir():
        pytest.fail("Node or web/node_modules is missing: run `make setup-web`")
    scratch = Path(tempfile.mkdtemp(dir=ROOT / "web", prefix=".layout-"))
    try:
        shutil.copy(ROOT / "tests/clients/layout_js.mjs", scratch / "layout_js.mjs")
        done = subprocess.run(["node", "layout_js.mjs", str(models), name, dtype, "mean", "1", json.dumps(texts)],
                              check=False, cwd=scratch, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.array(json.loads(done.stdout), dtype=np.float32)


@pytest.mark.web
@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8-dynamic"])
def test_transformers_js_loads_the_hf_layout_offline_and_gives_the_files_embeddings(transformer_file, tiny_bert,
                                                                                    tmp_path, quantized):
    # setup
    model = _quantized(transformer_file) if quantized else transformer_file
    variant = "int8-dynamic" if quantized else "fp32"
    record = write_layouts(tmp_path / "bundle", model, tiny_bert, TEXTS, wanted=["hf"], variant=variant,
                           config=tiny_bert / "config.json", max_length=MAX_LENGTH)["written"]["hf"]
    # execute
    got = _node_embeddings(tmp_path / "bundle", "hf", record["transformers.js"]["dtype"], TEXTS)
    # assert: transformers.js tokenizes, pools and normalizes as the graph does. Past model_max_length it cuts
    # after adding [CLS]/[SEP] (the input ends without [SEP]): the record says so, and that text is only close.
    assert record["transformers.js"]["file"] == ("onnx/model_quantized.onnx" if quantized else "onnx/model.onnx")
    expected = _ort_embedding(model, tiny_bert)
    np.testing.assert_allclose(got[:-1], expected[:-1], atol=2e-2 if quantized else 1e-4)
    assert float(got[-1] @ expected[-1]) > 0.9 and "without [SEP]" in record["transformers.js"]["truncation"]


@pytest.mark.web
def test_the_readmes_transformers_js_snippet_runs_from_the_bundle_folder(transformer_file, tiny_bert, tmp_path):
    """The README's own block, run by Node with the bundle folder as its working directory (the script sits under
    web/ so that its import finds web/node_modules)."""
    if shutil.which("node") is None or not (ROOT / "web/node_modules/@huggingface/transformers").is_dir():
        pytest.fail("Node or web/node_modules is missing: run `make setup-web`")
    # setup
    record = write_layouts(tmp_path, transformer_file, tiny_bert, TEXTS, wanted=["hf"],
                           config=tiny_bert / "config.json", max_length=MAX_LENGTH)
    lines = readme_lines(record)
    block = "\n".join(lines[lines.index("```js") + 1:lines.index("```", lines.index("```js") + 1)])
    scratch = Path(tempfile.mkdtemp(dir=ROOT / "web", prefix=".layout-"))
    try:
        (scratch / "readme.mjs").write_text(block + "\nprocess.stdout.write(JSON.stringify(embeddings));\n")
        # execute
        done = subprocess.run(["node", str(scratch / "readme.mjs")], check=False, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # assert
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.array(json.loads(done.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, _ort_embedding(transformer_file, tiny_bert, ["first text", "second text"]),
                               atol=1e-4)
