"""Sessions on a named provider: what the installed onnxruntime reads, where it placed the nodes, each provider's
options, and the rules a recipe builds on them (full placement, the same file compared across providers).

Everything here runs the real onnxruntime of the venv. The tests marked `openvino` need the onnxruntime-openvino
build (`make test-openvino`); the rest run everywhere."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.errors import ProviderUnavailable, RecipeError, UnreadableModel
from edgekit.recipe import Budget
from edgekit.runtime.providers import (
    SessionSettings,
    create_session,
    model_header,
    placement_text,
    provider_options,
    runtime_limits,
    write_readable,
)
from edgekit.stages.fits import meets_budget, partly_placed
from edgekit.stages.loading import recipe_from_dict
from edgekit.stages.select import closest_miss, provider_agreement

OPENVINO = "OpenVINOExecutionProvider" in ort.get_available_providers()
FEED = {"input_ids": np.array([[101, 7, 8, 9, 102]], dtype=np.int64), "attention_mask": np.ones((1, 5), np.int64),
        "token_type_ids": np.zeros((1, 5), np.int64)}


def _stamped(src, dst, ir_version):
    model = onnx.load(str(src))
    model.ir_version = ir_version
    onnx.save(model, str(dst))
    return dst


def _feed(session):
    return {i.name: FEED[i.name] for i in session.get_inputs()}


def test_the_header_reader_agrees_with_onnx_on_an_exported_file(tiny_bert_onnx):
    # execute
    ir_version, opsets = model_header(tiny_bert_onnx)
    # assert
    model = onnx.load(str(tiny_bert_onnx), load_external_data=False)
    assert ir_version == model.ir_version
    assert opsets == {o.domain: o.version for o in model.opset_import}


def test_runtime_limits_are_what_this_onnxruntime_refuses_beyond(tiny_bert_onnx, tmp_path):
    # execute
    limits = runtime_limits()
    # assert: the newest IR version loads in ORT itself, the next one is refused by ORT itself
    assert limits["onnxruntime"] == ort.__version__
    newest = _stamped(tiny_bert_onnx, tmp_path / "newest.onnx", limits["ir_version"])
    ort.InferenceSession(str(newest), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="IR version"):
        ort.InferenceSession(str(_stamped(tiny_bert_onnx, tmp_path / "next.onnx", limits["ir_version"] + 1)),
                             providers=["CPUExecutionProvider"])
    assert limits["opset"] >= 17


def test_a_file_newer_than_the_runtime_reads_is_refused_before_any_session_and_the_error_names_the_fix(
        tiny_bert_onnx, tmp_path):
    # setup: the file onnx 1.23 would stamp for a runtime that reads one IR version less
    newer = _stamped(tiny_bert_onnx, tmp_path / "model.onnx", runtime_limits()["ir_version"] + 1)
    # execute
    with pytest.raises(UnreadableModel) as error:
        create_session(newer)
    # assert
    message = str(error.value)
    assert f"ONNX IR version {runtime_limits()['ir_version'] + 1}" in message
    assert f"reads <= {runtime_limits()['ir_version']}" in message and ort.__version__ in message
    assert "export it again in this environment" in message


def test_write_readable_lowers_the_ir_version_and_the_file_runs_as_before(tiny_bert_onnx, tmp_path):
    # setup
    limits = runtime_limits()
    newer = _stamped(tiny_bert_onnx, tmp_path / "model.onnx", limits["ir_version"] + 1)
    same = Path(shutil.copy(tiny_bert_onnx, tmp_path / "same.onnx"))
    # execute
    written = write_readable(newer)
    untouched = write_readable(same)
    # assert
    assert written == limits["ir_version"] and model_header(newer)[0] == limits["ir_version"]
    assert untouched is None and same.read_bytes() == tiny_bert_onnx.read_bytes()
    session, _ = create_session(newer)
    reference, _ = create_session(tiny_bert_onnx)
    np.testing.assert_array_equal(session.run(None, _feed(session))[0], reference.run(None, _feed(reference))[0])
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_the_cpu_provider_places_every_node_and_the_record_counts_them(tiny_bert_onnx):
    # execute
    _, record = create_session(tiny_bert_onnx)
    # assert
    placement = record["placement"]
    assert placement["recorded"] and placement["full"] and placement["provider"] == "CPUExecutionProvider"
    assert placement["nodes"] == placement["on_provider"] == sum(placement["op_types"].values()) > 10
    assert placement["fallback"] == {} and "MatMul" in placement["op_types"]
    assert placement_text(placement) == f"all {placement['nodes']} nodes on CPUExecutionProvider"


def test_provider_options_measure_openvino_on_the_budgets_threads_and_the_users_options_win():
    # execute
    openvino = provider_options("OpenVINOExecutionProvider", SessionSettings(provider="openvino", threads=2))
    gpu = provider_options("OpenVINOExecutionProvider",
                           SessionSettings(provider="openvino", options=(("device_type", "GPU"),)))
    tensorrt = provider_options("TensorrtExecutionProvider", SessionSettings(provider="tensorrt", engine_cache="/c"))
    # assert
    assert openvino == {"device_type": "CPU", "num_of_threads": "2"}
    assert gpu["device_type"] == "GPU" and gpu["num_of_threads"] == "1"
    assert tensorrt["trt_engine_cache_enable"] == "True" and tensorrt["trt_engine_cache_path"] == "/c"
    assert provider_options("CPUExecutionProvider", SessionSettings()) == {}


def test_recipe_provider_options_are_checked_and_kept_as_strings():
    # execute
    budget = Budget(speedup=2, providers=["openvino", "cpu"], provider_options={"openvino": {"device_type": "CPU",
                                                                                             "num_streams": 1}})
    # assert
    assert budget.options_for("OpenVINOExecutionProvider") == {"device_type": "CPU", "num_streams": "1"}
    assert budget.options_for("cpu") == {}
    with pytest.raises(RecipeError, match="unknown execution provider 'openvn'"):
        recipe_from_dict({"teacher": {"model": "x", "kind": "sentence-encoder"},
                          "tasks": [{"name": "t", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
                          "budget": {"speedup": 2, "provider_options": {"openvn": {}}}})


def _row(name, provider, ms, placement, metric=0.8):
    return {"name": name, "provider": provider, "size_bytes": 1_000_000, "latency_ms": {"p95": ms},
            "metrics": {"sentiment": {"metric": "accuracy", "value": metric}}, "retention": {"sentiment": 99.0},
            "placement": placement}


def _placed(full: bool):
    if full:
        return {"recorded": True, "provider": "OpenVINOExecutionProvider", "nodes": 186, "on_provider": 186,
                "fallback": {}, "fallback_op_types": {}, "op_types": {"MatMul": 18}, "full": True}
    return {"recorded": True, "provider": "OpenVINOExecutionProvider", "nodes": 186, "on_provider": 180,
            "fallback": {"CPUExecutionProvider": 6}, "fallback_op_types": {"MatMulNBits": 6},
            "op_types": {"MatMul": 12}, "full": False}


def test_full_placement_when_required_marks_a_file_with_fallen_back_nodes_and_says_what_would_fit():
    # setup
    strict = Budget(ms=10, headroom=0, providers=["openvino"], require_full_placement=True)
    lenient = Budget(ms=10, headroom=0, providers=["openvino"])
    partial, full = _row("L1-int4-weight", "openvino", 5, _placed(False)), _row("L1-fp32", "openvino", 12, _placed(True))
    unknown = _row("L1-int8-dynamic", "openvino", 5, {"recorded": False, "why": "onnxruntime 1.20 cannot report"})
    # execute / assert
    assert not meets_budget(partial, strict) and meets_budget(partial, lenient)
    assert "6 of its 186 nodes fell back from OpenVINOExecutionProvider (MatMulNBits x6)" == partly_placed(partial,
                                                                                                         strict)
    assert not meets_budget(unknown, strict) and "placement is unknown" in partly_placed(unknown, strict)
    # the CPU provider is where nodes fall back to: nothing of its own can fall back
    assert partly_placed(_row("L1-fp32", "cpu", 5, None), strict) is None
    why = closest_miss([partial, full], strict, "file", True, "openvino")
    assert "1 file(s) meet the latency but not budget.require_full_placement: L1-int4-weight: 6 of its" in why
    assert "budget.require_full_placement: false" in why


def test_the_same_file_on_two_providers_is_compared_on_the_same_examples(tiny_bert_onnx):
    # setup: one file's per-example predictions on two providers: equal on one, one example flipped on another
    from edgekit.data.tasks import TaskData
    from edgekit.recipe import TaskSpec

    spec = TaskSpec(name="sentiment", kind="classification", data={"source": "rotten_tomatoes"}, metric="accuracy")
    labels = np.array([0, 1] * 50)
    task = TaskData(spec=spec, train={}, test={"text": ["t"] * 100, "label": labels}, labels=["neg", "pos"])
    right = {"sentiment": {"predictions": {"pred": labels.tolist()}}}
    flipped = labels.copy()
    flipped[:30] = 1 - flipped[:30]
    rows = [_row("A", "cpu", 5, None, 1.0), _row("A", "openvino", 4, _placed(True), 1.0),
            _row("B", "cpu", 5, None, 1.0), _row("B", "openvino", 6, _placed(True), 0.7)]
    predictions = {("A", "cpu"): right, ("A", "openvino"): right, ("B", "cpu"): right,
                   ("B", "openvino"): {"sentiment": {"predictions": {"pred": flipped.tolist()}}}}
    # execute
    compared = provider_agreement(rows, ["cpu", "openvino"], predictions, [task])
    # assert
    by_name = {c["name"]: c for c in compared}
    assert set(by_name) == {"A", "B"} and all(c["versus"] == "cpu" for c in compared)
    assert by_name["A"]["within_noise"] and by_name["A"]["tasks"]["sentiment"]["difference"] == 0
    assert not by_name["B"]["within_noise"]
    assert by_name["B"]["tasks"]["sentiment"]["difference"] == pytest.approx(-0.3)
    assert by_name["B"]["tasks"]["sentiment"]["ci95"][1] < 0
    assert by_name["A"]["p95_ratio"]["latency_ms"] == pytest.approx(0.8)
    assert provider_agreement(rows, ["cpu"], predictions, [task]) == []
    # without recorded predictions (an older cache): the difference of the metrics, and no verdict either way
    unpaired = {c["name"]: c for c in provider_agreement(rows, ["cpu", "openvino"], None, [task])}
    assert unpaired["B"]["tasks"]["sentiment"]["difference"] == pytest.approx(-0.3)
    assert unpaired["B"]["within_noise"] is None and unpaired["B"]["tasks"]["sentiment"]["ci95"] is None


def test_bench_takes_provider_options_and_a_malformed_one_names_the_form(run_cli, tiny_bert_onnx, tmp_path):
    # execute
    bad = run_cli("bench", tiny_bert_onnx, "--provider-option", "device_type")
    good = run_cli("bench", tiny_bert_onnx, "--provider-option", "unused=1", "--min-runs", 5, "--min-seconds", 0,
                   "-o", tmp_path / "b.json")
    # assert
    assert bad.exit_code != 0 and "must look like NAME=VALUE" in bad.output and "Traceback" not in bad.output
    assert good.exit_code == 0, good.output
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["config"]["provider_options"] == {"unused": "1"} and result["session"]["placement"]["full"]


@pytest.mark.openvino
@pytest.mark.skipif(not OPENVINO, reason="needs the onnxruntime-openvino build (make test-openvino)")
def test_openvino_runs_the_file_with_every_node_placed_and_the_same_outputs_as_cpu(tiny_bert_onnx):
    # execute
    session, record = create_session(tiny_bert_onnx, SessionSettings(provider="openvino"))
    reference, _ = create_session(tiny_bert_onnx)
    # assert
    assert record["session_providers"][0] == "OpenVINOExecutionProvider"
    assert record["options"] == {"device_type": "CPU", "num_of_threads": "1"}
    assert record["placement"]["provider"] == "OpenVINOExecutionProvider" and record["placement"]["nodes"] > 10
    np.testing.assert_allclose(session.run(None, _feed(session))[0], reference.run(None, _feed(reference))[0],
                               atol=1e-3)


@pytest.mark.openvino
@pytest.mark.skipif(not OPENVINO, reason="needs the onnxruntime-openvino build (make test-openvino)")
def test_openvino_on_a_device_that_is_not_here_names_the_devices_there_are(tiny_bert_onnx):
    # execute
    with pytest.raises(ProviderUnavailable) as error:
        create_session(tiny_bert_onnx, SessionSettings(provider="openvino", options=(("device_type", "NPU"),)))
    # assert
    assert "OpenVINO device 'NPU' is not present here (OpenVINO sees: CPU" in str(error.value)


@pytest.mark.openvino
@pytest.mark.skipif(not OPENVINO, reason="needs the onnxruntime-openvino build (make test-openvino)")
def test_nodes_openvino_has_no_kernel_for_are_counted_as_fallen_back_to_cpu(tmp_path, run_cli):
    # setup: Relu -> com.microsoft Inverse (a contrib op OpenVINO lacks) -> Relu
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
             helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Inverse", ["a"], ["b"], domain="com.microsoft"),
             helper.make_node("Relu", ["b"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "partial", value[:1], value[1:]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    path = tmp_path / "partial.onnx"
    onnx.save(model, str(path))
    # execute
    _, record = create_session(path, SessionSettings(provider="openvino"))
    result = run_cli("bench", path, "--provider", "openvino", "--min-runs", 5, "--min-seconds", 0,
                     "-o", tmp_path / "b.json")
    # assert: the record says which nodes ran where, and so does the bench's summary
    placement = record["placement"]
    assert not placement["full"] and placement["nodes"] == 3
    assert placement["fallback_op_types"].get("Inverse") == 1 and placement["fallback"]["CPUExecutionProvider"] >= 1
    assert placement["on_provider"] + placement["fallback"]["CPUExecutionProvider"] == 3
    assert result.exit_code == 0, result.output
    assert "fell back to CPU: " in result.output and "Inverse 1" in result.output
