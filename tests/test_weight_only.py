"""int4 / int8 weight-only variants (ORT's MatMulNBits) on the tiny BERT: the file, its record, the CLI, the recipe."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from transformers import AutoTokenizer

from edgekit.errors import QuantizationFailed, RecipeError
from edgekit.runtime.quantize import CONFIGS, WeightOnly, quant_config, quantize_file, quantized_matmuls
from edgekit.testing import tiny_recipe

SENTENCES = ["a funny and moving film", "the worst story of the year, too long and dull",
             "it is not good but not bad", "best movie"]


def _pooled(path, tokenizer):
    """Mean-pooled last hidden state of SENTENCES: (4, 32)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = tokenizer(SENTENCES, padding="longest", return_tensors="np")
    hidden = session.run(["last_hidden_state"], {i.name: encoded[i.name].astype(np.int64)
                                                 for i in session.get_inputs()})[0]
    mask = encoded["attention_mask"][..., None]
    return (hidden * mask).sum(1) / mask.sum(1)


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _nbits_nodes(path):
    model = onnx.load(str(path))
    return model, [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def _attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.mark.parametrize(("bits", "block_size"), [(4, 16), (4, 64), (8, 32)])
def test_weight_only_file_has_matmulnbits_of_the_asked_bits_and_block(tiny_bert_onnx, tmp_path, monkeypatch, bits,
                                                                     block_size):
    # setup
    monkeypatch.chdir(tmp_path)
    dst = tmp_path / "out" / "model.onnx"
    source = onnx.load(str(tiny_bert_onnx))
    # execute
    record = quantize_file(tiny_bert_onnx, dst, WeightOnly(bits=bits, block_size=block_size))
    # assert: every weight MatMul (2 layers x q, k, v, attention out, FFN in, FFN out) is a com.microsoft
    # MatMulNBits of these bits and block size; the 4 attention-score MatMuls (two activations) stay float
    model, nodes = _nbits_nodes(dst)
    assert len(nodes) == 12 and {n.domain for n in nodes} == {"com.microsoft"}
    assert {(a["bits"], a["block_size"], a["accuracy_level"]) for a in map(_attributes, nodes)} == {
        (bits, block_size, 4)}
    assert sum(n.op_type == "MatMul" for n in model.graph.node) == 4
    # assert: the IR version and the default-domain opset are the source's (a runtime reads it as it read fp32)
    default = {o.domain: o.version for o in model.opset_import}
    assert model.ir_version == source.ir_version and default[""] == source.opset_import[0].version
    assert default["com.microsoft"] == 1
    # assert: the record says what was done, JSON-able
    assert json.loads(json.dumps(record)) == record
    assert {k: record[k] for k in ("method", "weight_type", "activation_type", "bits", "block_size", "accuracy_level",
                                   "symmetric", "matmuls_quantized", "float_matmuls", "float_weights",
                                   "reduce_range", "op_types")} == {
        "method": f"int{bits}-weight", "weight_type": f"int{bits}", "activation_type": "float", "bits": bits,
        "block_size": block_size, "accuracy_level": 4, "symmetric": True, "matmuls_quantized": 12,
        "float_matmuls": 4, "float_weights": {"Gather": 3}, "reduce_range": None, "op_types": ["MatMul"]}
    assert f"per {block_size} weights" in record["why"] and "int8" in record["why"]
    assert record["size_bytes"] == dst.stat().st_size < tiny_bert_onnx.stat().st_size
    assert quantized_matmuls(dst) == [n.name.removesuffix(f"_Q{bits}") for n in nodes]
    # assert: nothing but dst is left in the cwd or beside dst
    assert os.listdir(tmp_path) == ["out"] and os.listdir(dst.parent) == ["model.onnx"]


def test_int4_stays_close_to_fp32_and_int8_closer(tiny_bert_onnx, tokenizer, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    fp32 = _pooled(tiny_bert_onnx, tokenizer)
    # execute
    errors, sizes = {}, {}
    for name, config in {"int4/16": WeightOnly(4, 16), "int4/32": WeightOnly(4, 32), "int8/32": WeightOnly(8, 32)}.items():
        dst = tmp_path / f"{name.replace('/', '-')}.onnx"
        sizes[name] = quantize_file(tiny_bert_onnx, dst, config)["size_bytes"]
        pooled = _pooled(dst, tokenizer)
        assert _cosine(fp32, pooled).min() > 0.999
        errors[name] = np.abs(pooled - fp32).max()
    # assert: 8 bits round the weights far less than 4 (the bits are not ignored), and a smaller block carries
    # more scales (a bigger file)
    assert 0 < errors["int8/32"] < errors["int4/32"] / 5
    assert sizes["int4/16"] > sizes["int4/32"] and sizes["int8/32"] > sizes["int4/32"]


def test_accuracy_level_0_leaves_the_attribute_out(tiny_bert_onnx, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    # execute
    record = quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", quant_config("int8-weight", accuracy_level=0))
    # assert: ORT writes no accuracy_level at 0 (some runtimes reject the attribute); the record still says 0
    _, nodes = _nbits_nodes(tmp_path / "q.onnx")
    assert nodes and all("accuracy_level" not in _attributes(n) for n in nodes)
    assert record["accuracy_level"] == 0 and "float32" in record["why"]


def test_keep_fp32_leaves_the_named_matmul_float(tiny_bert_onnx, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    kept = next(n.name for n in onnx.load(str(tiny_bert_onnx)).graph.node
                if n.op_type == "MatMul" and "layer/0/attention/self/query" in n.name)
    # execute
    record = quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", "int4-weight", keep_fp32=[kept])
    # assert
    assert kept not in quantized_matmuls(tmp_path / "q.onnx") and len(quantized_matmuls(tmp_path / "q.onnx")) == 11
    assert (record["matmuls_quantized"], record["float_matmuls"], record["kept_fp32"]) == (11, 5, [kept])
    assert record["float_weights"] == {"Gather": 3, "MatMul": 1}


def test_a_graph_without_weight_matmuls_is_written_and_the_record_says_nothing_was_quantized(tmp_path, monkeypatch):
    # setup: a static-embedding student's shape: a table Gather, a mean, a Gemm projection
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["rows"], name="gather"),
         helper.make_node("ReduceMean", ["rows"], ["mean"], axes=[1], keepdims=0, name="mean"),
         helper.make_node("Gemm", ["mean", "w"], ["embedding"], name="projection")], "static",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")])
    src = tmp_path / "static.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    # execute
    record = quantize_file(src, tmp_path / "q.onnx", "int4-weight")
    # assert
    assert (record["matmuls_quantized"], record["float_weights"]) == (0, {"Gather": 1, "Gemm": 1})
    assert "nothing was quantized" in record["why"]
    ids = {"input_ids": np.array([[1, 2, 3]], dtype=np.int64)}
    assert np.array_equal(ort.InferenceSession(str(src)).run(None, ids)[0],
                          ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, ids)[0])


@pytest.mark.parametrize("block_size", [24, 8, 512, 32.0, True])
def test_a_bad_block_size_names_the_sizes_there_are(block_size):
    # execute / assert: refused before any work, naming the option and the sizes to use
    with pytest.raises(QuantizationFailed, match="block_size must be a power of two from 16 to 256") as err:
        WeightOnly(bits=4, block_size=block_size)
    assert "--block-size" in str(err.value) and "quantize.block_size" in str(err.value)
    with pytest.raises(QuantizationFailed, match="power of two"):
        quant_config("int8-weight", block_size=block_size)


def test_bad_bits_and_accuracy_level_name_the_choices():
    with pytest.raises(QuantizationFailed, match="int4-weight or int8-weight"):
        WeightOnly(bits=2)
    with pytest.raises(QuantizationFailed, match="0-4.*4 int8"):
        WeightOnly(accuracy_level=5)


def test_quant_config_sets_weight_only_settings_and_ignores_them_elsewhere():
    # assert: defaults in the table, the asked settings on a name, other methods unchanged
    assert CONFIGS["int4-weight"] == WeightOnly(bits=4, block_size=32, accuracy_level=4, symmetric=True)
    assert quant_config("int4-weight", block_size=128) == WeightOnly(bits=4, block_size=128)
    assert quant_config("int8-weight", accuracy_level=1).accuracy_level == 1
    assert quant_config("int8-dynamic", block_size=128) is CONFIGS["int8-dynamic"]
    # assert: what callers branch on: no calibration, not GPU-only, not ORT's int8 path (reduce_range, the
    # accuracy-aware int8 search and the "allow int8 variants" hint do not apply)
    config = CONFIGS["int8-weight"]
    assert (config.needs_calibration, config.gpu_only, config.int8, config.weight_type) == (False, False, False, "int8")


def test_the_quantizer_leaves_the_processs_logging_alone(tiny_bert_onnx, tmp_path):
    # setup: ORT's MatMulNBits module calls logging.basicConfig(level=INFO) when imported; a fresh interpreter
    code = ("import logging, sys; from edgekit.runtime.quantize import quantize_file; "
            f"quantize_file({str(tiny_bert_onnx)!r}, {str(tmp_path / 'q.onnx')!r}, 'int4-weight'); "
            "root = logging.getLogger(); print(len(root.handlers), root.level)")
    # execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    # assert: no handler added to the root logger, its level unchanged, and none of the quantizer's per-node lines
    assert out.stdout.split() == ["0", str(30)]
    assert "matmul_nbits_quantizer" not in out.stderr


def test_cli_writes_an_int4_file_with_the_asked_block_size(run_cli, model_copy, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    # execute
    result = run_cli("quantize", model_copy, "--method", "int4-weight", "--block-size", 16)
    wrong = run_cli("quantize", model_copy, "--method", "int4-weight", "--block-size", 24, "-o", tmp_path / "w.onnx")
    # assert: one line naming the file, the bits, the block and what stayed float
    dst = model_copy.with_name("model.int4-weight.onnx")
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and str(dst) in result.output
    assert "weights int4 in blocks of 16" in result.output and "12 MatMuls quantized" in result.output
    assert "accuracy_level 4" in result.output and "3 Gather" in result.output
    _, nodes = _nbits_nodes(dst)
    assert {_attributes(n)["block_size"] for n in nodes} == {16}
    # assert: a bad block size is a one-line error naming the sizes, and writes nothing
    assert wrong.exit_code == 1 and "power of two from 16 to 256" in wrong.output
    assert "Traceback" not in wrong.output and not (tmp_path / "w.onnx").exists()
    assert sorted(os.listdir(model_copy.parent)) == ["model.int4-weight.onnx", "model.onnx"]


def test_cli_accuracy_level_is_written_to_the_nodes(run_cli, model_copy):
    # execute
    result = run_cli("quantize", model_copy, "--method", "int8-weight", "--accuracy-level", 1)
    # assert
    assert result.exit_code == 0, result.output
    _, nodes = _nbits_nodes(model_copy.with_name("model.int8-weight.onnx"))
    assert {(_attributes(n)["bits"], _attributes(n)["accuracy_level"]) for n in nodes} == {(8, 1)}


def test_recipe_takes_weight_only_variants_block_size_and_accuracy_level(tiny_bert):
    # execute
    recipe = tiny_recipe(tiny_bert, quantize={"variants": ["int8-dynamic", "int4-weight", "int8-weight"],
                                              "block_size": 64, "accuracy_level": 1})
    default = tiny_recipe(tiny_bert)
    # assert
    assert recipe.quantize.variants == ["int8-dynamic", "int4-weight", "int8-weight"]
    assert (recipe.quantize.block_size, recipe.quantize.accuracy_level) == (64, 1)
    assert (default.quantize.block_size, default.quantize.accuracy_level) == (32, 4)
    # what the export stage's cache key holds (measure._cached_export: exporting.quantize.model_dump())
    assert {"block_size", "accuracy_level"} <= set(recipe.quantize.model_dump())
    assert recipe.quantize.model_dump() != tiny_recipe(tiny_bert, quantize={"block_size": 128}).quantize.model_dump()


@pytest.mark.parametrize(("quantize", "where"), [({"block_size": 24}, "quantize.block_size"),
                                                 ({"accuracy_level": 7}, "quantize.accuracy_level"),
                                                 ({"variants": ["int4"]}, "quantize.variants.0")])
def test_recipe_refuses_bad_weight_only_settings(tiny_bert, quantize, where):
    with pytest.raises(RecipeError, match=where):
        tiny_recipe(tiny_bert, quantize=quantize)
