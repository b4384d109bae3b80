"""bench/floor.py counts a file's matmul work per precision and divides it by the CPU's measured matmul peak."""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.floor import floor_ms, matmul_work, measure_peaks

RNG = np.random.default_rng(0)


def _save(tmp_path, nodes, inputs, outputs, inits, name="model.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _matmul_model(tmp_path):
    """Y = Relu(X) @ W with X [2,3,8] and an initializer W [8,5]."""
    w = numpy_helper.from_array(RNG.standard_normal((8, 5)).astype(np.float32), "W")
    nodes = [helper.make_node("Relu", ["X"], ["R"]), helper.make_node("MatMul", ["R", "W"], ["Y"], name="mm")]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 8])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 5])], [w])


def _x():
    return {"X": RNG.standard_normal((2, 3, 8)).astype(np.float32)}


def test_a_float_matmul_by_an_initializer_is_fp32_work(tmp_path):
    # setup
    path = _matmul_model(tmp_path)
    # execute
    work = matmul_work(path, _x())
    # assert
    assert work["fp32_flops"] == 2 * 6 * 8 * 5
    assert work["int8_ops"] == 0
    assert work["nodes"] == [{"name": "mm", "op_type": "MatMul", "precision": "fp32",
                              "m": 3, "k": 8, "n": 5, "batch": 2, "flops": 2 * 6 * 8 * 5}]


def test_shapes_are_read_from_the_run_not_the_declared_graph(tmp_path):
    # setup: attention-like scores X @ X^T with symbolic dims; only the feed says how big they are
    nodes = [helper.make_node("Transpose", ["X"], ["XT"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["X", "XT"], ["S"], name="scores")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", "s", 8])],
                 [helper.make_tensor_value_info("S", TensorProto.FLOAT, ["b", "s", "s"])], [])
    feed = {"X": RNG.standard_normal((3, 7, 8)).astype(np.float32), "not_an_input": np.zeros(1)}
    # execute
    work = matmul_work(path, feed)
    # assert
    (node,) = work["nodes"]
    assert (node["batch"], node["m"], node["k"], node["n"]) == (3, 7, 8, 7)
    assert work["fp32_flops"] == 2 * 3 * 7 * 8 * 7


def test_gemm_with_transposed_b_counts_its_real_dimensions(tmp_path):
    # setup: A [4,6] times B^T with B [10,6] plus a bias
    b = numpy_helper.from_array(RNG.standard_normal((10, 6)).astype(np.float32), "B")
    c = numpy_helper.from_array(np.zeros(10, np.float32), "C")
    nodes = [helper.make_node("Gemm", ["A", "B", "C"], ["Y"], name="fc", transB=1)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [4, 6])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 10])], [b, c])
    # execute
    work = matmul_work(path, {"A": RNG.standard_normal((4, 6)).astype(np.float32)})
    # assert
    (node,) = work["nodes"]
    assert (node["batch"], node["m"], node["k"], node["n"]) == (1, 4, 6, 10)
    assert work["fp32_flops"] == 2 * 4 * 6 * 10
    assert work["int8_ops"] == 0


def test_a_dynamically_quantized_matmul_is_int8_work_of_the_same_size(tmp_path):
    # setup
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(_matmul_model(tmp_path), quantized, weight_type=QuantType.QInt8)
    # execute
    work = matmul_work(quantized, _x())
    # assert
    assert [n["op_type"] for n in work["nodes"]] == ["MatMulInteger"]
    assert work["int8_ops"] == 2 * 6 * 8 * 5
    assert work["fp32_flops"] == 0


def _qdq_model(tmp_path, quantize_a: bool):
    """MatMul of X [2,3,8] by a dequantized int8 weight; X itself goes through Q/DQ only if quantize_a."""
    inits = [numpy_helper.from_array(RNG.integers(-128, 128, (8, 5), dtype=np.int8), "Wq"),
             numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"])]
    a = "X"
    if quantize_a:
        nodes += [helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zp"], ["Xq"]),
                  helper.make_node("DequantizeLinear", ["Xq", "x_scale", "x_zp"], ["Xdq"])]
        a = "Xdq"
    nodes.append(helper.make_node("MatMul", [a, "W"], ["Y"], name="mm"))
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 8])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 5])], inits,
                 name=f"qdq-{quantize_a}.onnx")


def test_a_qdq_matmul_is_int8_only_when_both_inputs_are_dequantized(tmp_path):
    # execute
    both = matmul_work(_qdq_model(tmp_path, quantize_a=True), _x())
    weight_only = matmul_work(_qdq_model(tmp_path, quantize_a=False), _x())
    # assert
    assert (both["int8_ops"], both["fp32_flops"]) == (2 * 6 * 8 * 5, 0)
    assert (weight_only["int8_ops"], weight_only["fp32_flops"]) == (0, 2 * 6 * 8 * 5)
    assert both["nodes"][0]["precision"] == "int8"
    assert weight_only["nodes"][0]["precision"] == "fp32"


def test_peaks_are_measured_and_positive():
    # execute
    peaks = measure_peaks(seconds=0.05, shapes=((64, 64, 64),))
    # assert
    assert peaks["threads"] == 1
    for key in ("fp32_gflops", "int8_gops"):
        assert math.isfinite(peaks[key]) and peaks[key] > 0
    (row,) = peaks["shapes"]
    assert (row["m"], row["k"], row["n"]) == (64, 64, 64)
    assert row["fp32_gflops"] == peaks["fp32_gflops"] and row["int8_gops"] == peaks["int8_gops"]


def test_the_floor_is_fp32_work_at_the_fp32_peak_plus_int8_work_at_the_int8_peak():
    # setup: 2 GFLOP at 20 GFLOP/s = 100 ms; 3 GOP at 60 GOP/s = 50 ms
    work = {"fp32_flops": 2_000_000_000, "int8_ops": 3_000_000_000, "nodes": []}
    peaks = {"fp32_gflops": 20.0, "int8_gops": 60.0}
    # execute / assert
    assert floor_ms(work, peaks) == pytest.approx(150.0)
