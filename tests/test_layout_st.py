"""sentence-transformers' ONNX backend loads a bundle's hf/ layout and gives the file's embeddings.

Checked in the oldest stack's venv (`make test-oldest`): the ONNX backend needs optimum-onnx, whose only release
(0.1.0) requires transformers<4.58 and fails to import on transformers 5, while sentence-transformers 6 requires
transformers>=5; so the release checked is the newest 5.x (the Makefile pins it), which accepts transformers 4.57.
Elsewhere these tests skip."""

import numpy as np
import pytest
from transformers import AutoModel, AutoTokenizer

from edgekit.modeling.networks import TextModel
from edgekit.stages.layouts import readme_lines, write_layouts

pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx is not installed (the oldest stack has it: "
                    "make test-oldest)")
sentence_transformers = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
if int(sentence_transformers.__version__.split(".")[0]) >= 6:
    pytest.skip("sentence-transformers 6 needs transformers 5, on which optimum-onnx does not import: the ONNX "
                "backend is checked in the oldest stack (make test-oldest)", allow_module_level=True)

from test_layouts import MAX_LENGTH, TEXTS, _export, _ort_embedding, _quantized, _run_readme_block


@pytest.fixture(scope="module")
def transformer_file(tiny_bert, tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    student = TextModel(AutoModel.from_pretrained(tiny_bert), "sentence-encoder", {}, "mean", True).eval()
    return _export(student, tokenizer, tmp_path_factory.mktemp("transformer"))


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8-dynamic"])
def test_sentence_transformers_onnx_backend_loads_the_hf_layout(transformer_file, tiny_bert, tmp_path, quantized):
    # setup
    model = _quantized(transformer_file) if quantized else transformer_file
    record = write_layouts(tmp_path, model, tiny_bert, TEXTS, wanted=["hf"],
                           variant="int8-dynamic" if quantized else "fp32", config=tiny_bert / "config.json",
                           max_length=MAX_LENGTH)["written"]["hf"]
    # execute
    loaded = sentence_transformers.SentenceTransformer(str(tmp_path / "hf"), backend="onnx", device="cpu",
                                                       model_kwargs=record["sentence-transformers"]["model_kwargs"],
                                                       local_files_only=True)  # as the README's snippet
    got = loaded.encode(TEXTS)
    # assert: its own tokenizer (truncated at max_seq_length), Pooling and Normalize give the graph's embedding,
    # the text past max_length included
    assert loaded.max_seq_length == MAX_LENGTH
    np.testing.assert_allclose(got, _ort_embedding(model, tiny_bert), atol=2e-2 if quantized else 1e-4)


def test_the_readmes_sentence_transformers_snippet_runs_from_the_bundle_folder(transformer_file, tiny_bert, tmp_path):
    # setup
    record = write_layouts(tmp_path, transformer_file, tiny_bert, TEXTS, wanted=["hf"],
                           config=tiny_bert / "config.json", max_length=MAX_LENGTH)
    # execute: the README's block as a user runs it, from the bundle folder
    got = _run_readme_block(readme_lines(record), "### hf/", tmp_path)["embeddings"]
    # assert
    np.testing.assert_allclose(got, _ort_embedding(transformer_file, tiny_bert, ["first text", "second text"]),
                               atol=1e-4)
