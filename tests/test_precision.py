"""Accuracy-aware int8 on a real ONNX graph with one quantization-sensitive MatMul."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.runtime.precision import drops, fit_allowed_drop, node_sensitivity
from edgekit.runtime.quantize import quantize_file, quantized_matmuls, reduce_range_choice


def _two_matmuls(path):
    """x (n, 1) -> MatMul(W1) -> h (n, 32) -> MatMul(W2) -> y (n, 8). W1 gives h one huge column that W2
    ignores: quantizing h to 8 bits over that range wipes out the small columns y is made of, so the second
    MatMul is the sensitive one (as the FFN down-projection is in MiniLM); the first sees a well-scaled input.

    Error budget, the same on every CPU kernel (VNNI, AMX, AVX2/AVX-512 without VNNI, arm64) and with 7- or
    8-bit weights. The first MatMul has K = 1: each output is ONE uint8 x int8 product, so no kernel's
    int16 pair sum (vpmaddubsw on x86 without VNNI) can saturate, and per-channel scales quantize each
    of W1's single-row columns exactly. All it loses is x's dynamic uint8 rounding: step = range / 255
    (~5 / 255 for 16 normal values), rms step / sqrt(12) ~ 0.6% of x -> ~0.5% of y. (The earlier graph,
    K = 16, lost 0.74% on a VNNI CPU, 1.32% with 7-bit weights, and ~16% on a saturating AVX2 kernel
    with 8-bit weights (emulated): no allowed drop could sit 3x from both that and the all-int8 loss.)
    The second MatMul's input h has range ~ 2000 |W1[0, 0]| max|x|: its uint8 step is as large as
    the small columns of h themselves, and y loses ~72% (all-int8 and with only the first kept)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((1, 32)).astype(np.float32)
    w1[:, 0] *= 2000.0
    w2 = rng.standard_normal((32, 8)).astype(np.float32)
    w2[0] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _fidelity(path, fp32_path, feeds):
    """A real score: 100 minus the relative error (%) of the file's outputs to the fp32 file's."""
    got, want = (np.concatenate([ort.InferenceSession(str(p)).run(None, feed)[0] for feed in feeds])
                 for p in (path, fp32_path))
    return {"fidelity": 100.0 - 100.0 * float(np.linalg.norm(got - want) / np.linalg.norm(want))}


def _largest_int8_weight(path):
    """Largest |int8 weight| of the file's quantized MatMul weights: <= 64 with reduce_range, 127 without."""
    return max(int(np.abs(numpy_helper.to_array(init).astype(np.int32)).max()) for init in onnx.load(str(path)).graph.initializer
               if init.data_type == TensorProto.INT8 and len(init.dims) == 2)


MAX_DROP = 5.0  # ~10x the first MatMul's loss, ~1/14 of the second's (see _two_matmuls): either way on any CPU
# simulated hosts for the auto setting (as environment.cpu_info reports them)
_X86 = {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
HOSTS = {"x86-avx2": ({"name": "AVX2 only", "arch": "x86_64", "logical_cores": 2, "instruction_sets": _X86}, True),
         "x86-vnni": ({"name": "VNNI", "arch": "x86_64", "logical_cores": 2,
                       "instruction_sets": {**_X86, "avx512f": True, "avx512_vnni": True}}, False),
         "arm64": ({"name": "arm", "arch": "aarch64", "logical_cores": 2,
                    "instruction_sets": {"neon": True, "dotprod": False}}, False)}


def _feeds():
    return [{"x": np.random.default_rng(i).standard_normal((16, 1)).astype(np.float32)} for i in range(8)]


def _fake_timer(timed):
    def time_files(paths):
        timed.append([p.name for p in paths])
        return [{"p50": 1.0 + i, "p95": 2.0 + i} for i, _ in enumerate(paths)]

    return time_files


@pytest.mark.parametrize("reduce_range", [False, True])
def test_the_sensitive_matmul_is_found_kept_in_fp32_and_its_cost_measured(tmp_path, reduce_range):
    # setup: both weight widths pinned, so the outcome does not depend on this host's CPU
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8-dynamic.onnx"
    _two_matmuls(src)
    quantize_file(src, dst, "int8-dynamic", reduce_range=reduce_range)
    feeds = _feeds()
    all_int8 = _fidelity(dst, src, feeds)["fidelity"]
    wrong = tmp_path / "keep-first.onnx"  # what a search that kept the wrong node would ship
    quantize_file(src, wrong, "int8-dynamic", keep_fp32=["first"], reduce_range=reduce_range)
    keep_wrong = _fidelity(wrong, src, feeds)["fidelity"]
    wrong.unlink()
    timed = []

    # act
    (tmp_path / "trials").mkdir()
    ranking = node_sensitivity(src, quantized_matmuls(dst), feeds, tmp_path / "trials", reduce_range=reduce_range)
    record = fit_allowed_drop(src, dst, MAX_DROP, lambda path: _fidelity(path, src, feeds), feeds, _fake_timer(timed),
                              echo=print, reduce_range=reduce_range)
    # assert: all-int8 (and keeping the wrong node) loses more than allowed, the pass ranks the second MatMul
    # first, and keeping it fits
    assert 100.0 - all_int8 > MAX_DROP and 100.0 - keep_wrong > MAX_DROP
    assert [r["node"] for r in ranking] == ["second", "first"] and ranking[0]["error"] > 10 * ranking[1]["error"]
    assert record["fits"] and record["kept_fp32"] == ["second"]
    assert record["all_int8"]["drops"]["fidelity"] > MAX_DROP >= record["drops"]["fidelity"]
    # the search quantized with the setting it was given, and says so
    assert (record["reduce_range_setting"], record["reduce_range"]) == (reduce_range, reduce_range)
    assert (_largest_int8_weight(dst) <= 64) is reduce_range
    # dst is now the mixed file: the kept node is fp32, the other int8, and it scores what the record says
    assert quantized_matmuls(dst) == ["first"]
    assert drops({"fidelity": 100.0}, _fidelity(dst, src, feeds)) == record["drops"]
    # the all-int8 file and the step were timed side by side; the cost is their difference
    assert len(timed) == 1 and len(timed[0]) == 2
    assert record["sensitivity"][0]["cost_ms"] == {"p50": 1.0, "p95": 1.0}
    # the search's trial files are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8-dynamic.onnx", "model.onnx", "trials"]


@pytest.mark.parametrize("host", HOSTS)
def test_auto_follows_the_host_in_the_file_and_in_every_trial(tmp_path, monkeypatch, host):
    # setup: a simulated CPU (environment.cpu_info is what the auto choice reads)
    info, seven_bits = HOSTS[host]
    monkeypatch.setattr("edgekit.runtime.environment.cpu_info", lambda: info)
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8-dynamic.onnx"
    _two_matmuls(src)
    feeds = _feeds()
    # execute
    made = quantize_file(src, dst, "int8-dynamic")
    record = fit_allowed_drop(src, dst, MAX_DROP, lambda path: _fidelity(path, src, feeds), feeds, _fake_timer([]),
                              echo=print)
    # assert: the file and the mixed file that replaced it both use the host's choice, recorded as auto
    assert (made["reduce_range_setting"], made["reduce_range"]) == ("auto", seven_bits)
    assert (record["reduce_range_setting"], record["reduce_range"]) == ("auto", seven_bits)
    assert record["fits"] and record["kept_fp32"] == ["second"] and (_largest_int8_weight(dst) <= 64) is seven_bits


def test_a_file_within_the_allowed_drop_is_left_as_it_is(tmp_path):
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8-dynamic.onnx"
    _two_matmuls(src)
    quantize_file(src, dst, "int8-dynamic")
    before = dst.read_bytes()
    record = fit_allowed_drop(src, dst, 100.0, lambda path: {"fidelity": 1.0}, [], lambda paths: [], echo=print)
    assert record["fits"] and record["kept_fp32"] == [] and "sensitivity" not in record
    assert (record["reduce_range_setting"], record["reduce_range"]) == ("auto", reduce_range_choice()[0])
    assert dst.read_bytes() == before
