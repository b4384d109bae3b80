"""Accuracy-aware int8 on a real ONNX graph with one quantization-sensitive MatMul."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.precision import drops, fit_allowed_drop, node_sensitivity
from edgekit.quantize import quantize_file, quantized_matmuls


def _two_matmuls(path):
    """x -> MatMul(W1) -> h -> MatMul(W2) -> y. W1 gives h one huge column that W2 ignores: quantizing
    h to 8 bits over that range wipes out the small columns y is made of, so the second MatMul is the
    sensitive one (as the FFN down-projection is in MiniLM); the first sees a well-scaled input."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w1[:, 0] *= 2000.0
    w2 = rng.standard_normal((32, 8)).astype(np.float32)
    w2[0] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _fidelity(path, fp32_path, feeds):
    """A real score: 100 minus the relative error (%) of the file's outputs to the fp32 file's."""
    got, want = (np.concatenate([ort.InferenceSession(str(p)).run(None, feed)[0] for feed in feeds])
                 for p in (path, fp32_path))
    return {"fidelity": 100.0 - 100.0 * float(np.linalg.norm(got - want) / np.linalg.norm(want))}


def test_the_sensitive_matmul_is_found_kept_in_fp32_and_its_cost_measured(tmp_path):
    # setup
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8-dynamic.onnx"
    _two_matmuls(src)
    quantize_file(src, dst, "int8-dynamic")
    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(8)]
    all_int8 = _fidelity(dst, src, feeds)["fidelity"]
    timed = []

    def time_files(paths):
        timed.append([p.name for p in paths])
        return [{"p50": 1.0 + i, "p95": 2.0 + i} for i, _ in enumerate(paths)]

    # act
    (tmp_path / "trials").mkdir()
    ranking = node_sensitivity(src, quantized_matmuls(dst), feeds, tmp_path / "trials")
    record = fit_allowed_drop(src, dst, 1.0, lambda path: _fidelity(path, src, feeds), feeds, time_files,
                              echo=print)
    # assert: all-int8 loses more than allowed, the pass ranks the second MatMul first, keeping it fits
    assert 100.0 - all_int8 > 1.0
    assert [r["node"] for r in ranking] == ["second", "first"] and ranking[0]["error"] > 10 * ranking[1]["error"]
    assert record["fits"] and record["kept_fp32"] == ["second"]
    assert record["all_int8"]["drops"]["fidelity"] > 1.0 >= record["drops"]["fidelity"]
    # dst is now the mixed file: the kept node is fp32, the other int8, and it scores what the record says
    assert quantized_matmuls(dst) == ["first"]
    assert drops({"fidelity": 100.0}, _fidelity(dst, src, feeds)) == record["drops"]
    # the all-int8 file and the step were timed side by side; the cost is their difference
    assert len(timed) == 1 and len(timed[0]) == 2
    assert record["sensitivity"][0]["cost_ms"] == {"p50": 1.0, "p95": 1.0}
    # the search's trial files are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8-dynamic.onnx", "model.onnx", "trials"]


def test_a_file_within_the_allowed_drop_is_left_as_it_is(tmp_path):
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8-dynamic.onnx"
    _two_matmuls(src)
    quantize_file(src, dst, "int8-dynamic")
    before = dst.read_bytes()
    record = fit_allowed_drop(src, dst, 100.0, lambda path: {"fidelity": 1.0}, [], lambda paths: [], echo=print)
    assert record["fits"] and record["kept_fp32"] == [] and "sensitivity" not in record
    assert dst.read_bytes() == before
