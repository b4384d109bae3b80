"""The physical floor of an ONNX model's forward: its matmul work divided by this CPU's measured matmul peak.

Why: a file's latency means little on its own; it is only meaningful next to what the CPU can do at all. A
transformer encoder at 128 tokens spends more than 97% of its FLOPs in matmuls, so this module counts only the
matmul work of one forward (MatMul, Gemm, FusedMatMul in fp32; MatMulInteger, QLinearMatMul,
MatMulIntegerToFloat and QDQ MatMul/Gemm in int8) and leaves elementwise ops, softmax, layernorm and gathers
out: the floor is a lower bound on the forward's time, and floor_ms / measured_ms (the "fraction of the floor")
is at most about 1.

The peak is measured, not taken from a datasheet: ONNX Runtime's own fp32 MatMul and int8 MatMulInteger
kernels on the CPU provider (1 intra-op thread by default, as the timings), in the same process as the
timings, so the fraction is not flattered by a textbook peak the library never reaches.

    work = matmul_work("model.onnx", feed)
    peaks = measure_peaks()
    fraction = floor_ms(work, peaks) / measured_ms
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# A MiniLM layer's matmuls at 128 tokens (QKV/out 384x384, FFN 384x1536 and back), and one larger square.
DEFAULT_SHAPES = ((128, 384, 1536), (128, 1536, 384), (128, 384, 384), (512, 1024, 1024))

INT8_OPS = {"MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat"}
FLOAT_OPS = {"MatMul", "Gemm", "FusedMatMul"}
MATMUL_OPS = INT8_OPS | FLOAT_OPS
_WARMUP_RUNS = 5
_MIN_RUNS = 20


def _operands(node: onnx.NodeProto) -> tuple[str, str]:
    """Names of the A and B operands of a matmul node."""
    if node.op_type == "QLinearMatMul":
        return node.input[0], node.input[3]
    return node.input[0], node.input[1]


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _mkn(node: onnx.NodeProto, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(batch, m, k, n) of a matmul node from its operands' actual shapes."""
    if node.op_type == "Gemm":
        m, k = (a_shape[1], a_shape[0]) if _attr(node, "transA") else (a_shape[0], a_shape[1])
        n = b_shape[0] if _attr(node, "transB") else b_shape[1]
        return 1, m, k, n
    a, b = list(a_shape), list(b_shape)
    if node.op_type == "FusedMatMul":  # transBatchA/B are not modelled: they permute batch dims, not the work
        if _attr(node, "transA") and len(a) >= 2:
            a[-2], a[-1] = a[-1], a[-2]
        if _attr(node, "transB") and len(b) >= 2:
            b[-2], b[-1] = b[-1], b[-2]
    # numpy matmul rules: a 1-D A is a row [1, K], a 1-D B a column [K, 1]
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    batch_shape = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch_shape), a[-2], a[-1], b[-1]


def _precision(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> str:
    if node.op_type in INT8_OPS:
        return "int8"
    if node.op_type in ("MatMul", "Gemm"):
        # QDQ: ORT runs a float MatMul/Gemm whose both inputs are dequantized as an int8 kernel
        a, b = _operands(node)
        if all(name in producers and producers[name].op_type == "DequantizeLinear" for name in (a, b)):
            return "int8"
    return "fp32"


def matmul_work(onnx_path: str | Path, feed: dict[str, np.ndarray]) -> dict:
    """Matmul work of one forward of the file on `feed` (input name -> array):
    {"fp32_flops": int, "int8_ops": int, "nodes": [{"name", "op_type", "precision": "fp32"|"int8",
      "m", "k", "n", "batch", "flops"}...]}

    Only the main graph is counted (matmuls inside If/Loop/Scan bodies are not).
    """
    model = onnx.load(str(onnx_path))  # loads external data too; this copy is ours to change
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type in MATMUL_OPS]
    initializers = {init.name: tuple(init.dims) for init in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    producers = {out: n for n in graph.node for out in n.output}

    wanted = []
    for node in nodes:
        for name in _operands(node):
            if name not in initializers and name not in graph_inputs and name not in outputs:
                outputs.add(name)
                wanted.append(name)
    for name in wanted:  # ORT accepts an output with a name only; it fills in the type itself
        graph.output.append(helper.make_empty_tensor_value_info(name))

    shapes: dict[str, tuple[int, ...]] = dict(initializers)
    shapes.update({name: tuple(np.shape(value)) for name, value in feed.items() if name in graph_inputs})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # read the nodes unfused
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        values = session.run(None, {k: v for k, v in feed.items() if k in names})
        shapes.update({o.name: tuple(v.shape) for o, v in zip(session.get_outputs(), values)})

    rows = []
    for node in nodes:
        a, b = _operands(node)
        batch, m, k, n = _mkn(node, shapes[a], shapes[b])
        rows.append({
            "name": node.name, "op_type": node.op_type, "precision": _precision(node, producers),
            "m": int(m), "k": int(k), "n": int(n), "batch": int(batch), "flops": int(2 * batch * m * k * n),
        })
    return {
        "fp32_flops": sum(r["flops"] for r in rows if r["precision"] == "fp32"),
        "int8_ops": sum(r["flops"] for r in rows if r["precision"] == "int8"),
        "nodes": rows,
    }


def _matmul_model(m: int, k: int, n: int, int8: bool, rng: np.random.Generator) -> onnx.ModelProto:
    if int8:
        b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(128, np.uint8), "a_zero_point"),
                 numpy_helper.from_array(np.array(0, np.int8), "b_zero_point")]
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero_point", "b_zero_point"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        inits = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")]
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gops(m: int, k: int, n: int, int8: bool, threads: int, seconds: float, rng: np.random.Generator) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = _matmul_model(m, k, n, int8, rng)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    if int8:
        a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    else:
        a = rng.standard_normal((m, k)).astype(np.float32)
    feed = {"A": a}
    for _ in range(_WARMUP_RUNS):
        session.run(None, feed)
    times = []
    start = time.perf_counter()
    while len(times) < _MIN_RUNS or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times) / 1e9


def measure_peaks(threads: int = 1, seconds: float = 0.5, shapes=DEFAULT_SHAPES) -> dict:
    """{"fp32_gflops": float, "int8_gops": float, "threads": int,
        "shapes": [{"m","k","n","fp32_gflops","int8_gops"}...]}  (the peak = best over shapes)

    Each shape and precision is timed for `seconds` of wall time (at least 20 runs, after 5 warm-up runs);
    its rate is 2*m*k*n over the median run time.
    """
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in shapes:
        rows.append({
            "m": m, "k": k, "n": n,
            "fp32_gflops": _gops(m, k, n, False, threads, seconds, rng),
            "int8_gops": _gops(m, k, n, True, threads, seconds, rng),
        })
    return {
        "fp32_gflops": max(r["fp32_gflops"] for r in rows),
        "int8_gops": max(r["int8_gops"] for r in rows),
        "threads": threads,
        "shapes": rows,
    }


def floor_ms(work: dict, peaks: dict) -> float:
    """Milliseconds the file's matmul work takes at the measured peaks: fp32 FLOPs at the fp32 peak plus
    int8 ops at the int8 peak."""
    return 1e3 * (work["fp32_flops"] / (peaks["fp32_gflops"] * 1e9) + work["int8_ops"] / (peaks["int8_gops"] * 1e9))
