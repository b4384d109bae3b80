"""The web providers: onnxruntime-web in headless Chromium (edgekit/runtime/web_runtime.py), scored and timed like any
provider. Needs node, chromium and web/node_modules (`make setup-web`); `make test-web` runs these."""

import json

import numpy as np
import pytest

from edgekit.errors import BenchConfigError, ProviderUnavailable
from edgekit.runtime.bench import BenchConfig, run_benchmark
from edgekit.runtime.providers import SessionSettings, create_session, placement_text, require_provider

pytestmark = pytest.mark.web


def _feed(session, batch=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), dtype=np.int64)
    mask[0, length // 2:] = 0  # padding: the masked positions must not move the outputs either
    values = {"input_ids": rng.integers(1, 90, (batch, length)), "attention_mask": mask,
              "token_type_ids": np.zeros((batch, length), dtype=np.int64)}
    return {meta.name: values[meta.name].astype(np.int64) for meta in session.get_inputs()}


def test_a_wasm_session_has_the_files_signature_and_runs_it_as_the_cpu_provider_does(tiny_bert_onnx):
    web, record = create_session(tiny_bert_onnx, SessionSettings(provider="wasm", threads=1))
    native, _ = create_session(tiny_bert_onnx, SessionSettings(provider="cpu", threads=1))
    assert [(m.name, m.type) for m in web.get_inputs()] == [(m.name, m.type) for m in native.get_inputs()]
    assert [(m.name, m.type, m.shape) for m in web.get_outputs()] == [
        (m.name, m.type, m.shape) for m in native.get_outputs()]
    feed = _feed(web)
    for ours, theirs in zip(web.run(None, feed), native.run(None, feed), strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)  # fp32, other kernels
    assert record["provider"] == "wasm" and web.get_providers() == ["wasm"]
    assert record["versions"]["onnxruntime-web"] and record["versions"]["chromium"]
    assert record["cross_origin_isolated"] is True
    assert placement_text(record["placement"]) == "placement unknown: onnxruntime-web does not report node placement"


def test_wasm_latency_is_timed_in_the_page_honouring_min_runs(tiny_bert_onnx):
    result = run_benchmark(tiny_bert_onnx, BenchConfig(provider="wasm", min_runs=25, min_seconds=0, warmup_runs=2,
                                                       seq_len=16))
    assert "page" in result["inputs"]["timed_in"]
    assert result["runs"] >= 25 and len(result["samples_ms"]) == result["runs"]
    assert all(s > 0 for s in result["samples_ms"])
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"]
    assert result["session"]["session_providers"] == ["wasm"]
    assert result["memory_mb"]["session"] is None  # Python's memory is not the browser's
    json.dumps(result)


def test_wasm_latency_at_real_lengths_covers_whole_passes_over_the_pool(tiny_bert_onnx, tmp_path):
    # setup: 5 texts, so a pool of 5 feeds; 7 runs asked for
    source = tmp_path / "texts.txt"
    source.write_text("good\na dull film\nthe best story of all\nbad\nfunny and too long\n", encoding="utf-8")
    # execute
    result = run_benchmark(tiny_bert_onnx, BenchConfig(provider="wasm", lengths_from=str(source), min_runs=7,
                                                       min_seconds=0, warmup_runs=1))
    # assert: the page ran on to the end of the second pass
    assert result["inputs"]["pool"]["batches"] == 5 and result["runs"] == 10 and result["inputs"]["pool"]["passes"] == 2


def test_end_to_end_timing_in_the_browser_is_refused_not_faked(tiny_bert_onnx):
    with pytest.raises(BenchConfigError, match="not measured in the browser"):
        run_benchmark(tiny_bert_onnx, BenchConfig(provider="wasm", end_to_end=True, lengths_from="x.txt",
                                                  min_runs=1, min_seconds=0))


def test_missing_node_modules_is_provider_unavailable_naming_make_setup_web(tmp_path, monkeypatch, tiny_bert_onnx):
    monkeypatch.setenv("EDGEKIT_WEB_MODULES", str(tmp_path / "node_modules"))
    with pytest.raises(ProviderUnavailable, match="make setup-web") as raised:
        require_provider("wasm")
    assert "EDGEKIT_WEB_MODULES" in str(raised.value)
    with pytest.raises(ProviderUnavailable, match="make setup-web"):
        create_session(tiny_bert_onnx, SessionSettings(provider="wasm"))


def test_missing_chromium_is_provider_unavailable_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CHROMIUM", str(tmp_path / "chromium"))
    with pytest.raises(ProviderUnavailable, match="EDGEKIT_CHROMIUM"):
        require_provider("wasm")


def test_webgpu_on_a_software_adapter_is_unavailable_saying_why():
    try:
        require_provider("webgpu")
    except ProviderUnavailable as e:
        assert "webgpu is not available" in str(e) and "wasm" in str(e)
    # else: a machine with a hardware WebGPU adapter, where webgpu is a provider like wasm


def test_a_file_onnxruntime_web_refuses_is_an_error_naming_the_file(tmp_path):
    from onnx import TensorProto, helper, save

    from edgekit.errors import EdgekitError

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="edgekit.none")], "g", value[:1],
                              value[1:])
    path = tmp_path / "odd.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekit.none", 1)]),
         str(path))
    with pytest.raises(EdgekitError, match="odd.onnx"):
        create_session(path, SessionSettings(provider="wasm"))


def test_a_bridge_that_dies_is_an_error_naming_the_file_and_the_next_session_starts_a_new_one(tiny_bert_onnx):
    from edgekit.runtime import web_runtime

    session, _ = create_session(tiny_bert_onnx, SessionSettings(provider="wasm"))
    feed = _feed(session)
    web_runtime._bridge()._process.kill()
    with pytest.raises(ProviderUnavailable, match=str(tiny_bert_onnx.name)):
        session.run(None, feed)
    again, _ = create_session(tiny_bert_onnx, SessionSettings(provider="wasm"))
    assert again.run(None, feed)[0].shape == (3, 12, 32)


# ---------------------------------------------------------------------------- a whole run with a web provider

@pytest.fixture(scope="module")
def web_run(tiny_bert, tmp_path_factory):
    """A finished tiny run for the web profile (wasm the target, cpu beside it) with int8-dynamic added, so the
    agreement of a file onnxruntime-web computes differently is recorded too. Its own cache: a tiny run from
    nothing (~40 s) is quicker than the shared finished run plus this one."""
    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    cache = tmp_path_factory.mktemp("web") / "cache"
    recipe = tiny_recipe(tiny_bert, target="web", budget={"ms": 1000, "min_runs": 20, "min_seconds": 0, "rounds": 1},
                         # no accuracy-aware int8 search: it would time each file it tries in the browser
                         quantize={"variants": ["int8-dynamic", "int8-static-minmax"], "calibration_samples": 16,
                                   "max_drop": None})
    result = distill_and_export(recipe, out=cache.parent / "run", cache_dir=cache, echo=print)
    return result.path


def test_a_web_run_scores_and_times_wasm_rows_with_intervals(web_run):
    data = json.loads((web_run / "report.json").read_text())
    assert data["providers"]["measured"][:2] == ["wasm", "cpu"]
    wasm = [r for r in data["files"] if r["provider"] == "wasm"]
    assert {r["variant"] for r in wasm} >= {"fp32", "int8-dynamic", "int8-static-minmax"}
    for row in wasm:
        for task in ("sentiment", "pairs"):
            low, high = row["metrics"][task]["ci95"]
            assert low <= row["metrics"][task]["value"] <= high
        assert row["latency_ms"]["p95"] > 0 and row["latency_ms"]["runs"] >= 20
        assert row["latency_e2e_ms"] is None and "not measured" in row["latency_e2e_why"]
        bench = json.loads((web_run / row["bench"]).read_text())
        assert "page" in bench["inputs"]["timed_in"] and bench["session"]["versions"]["onnxruntime-web"]


def test_fp32_and_static_int8_files_agree_with_cpu_and_int8_dynamic_is_recorded(web_run):
    data = json.loads((web_run / "report.json").read_text())
    wasm = {r["name"]: r for r in data["files"] if r["provider"] == "wasm"}
    cpu = {r["name"]: r for r in data["files"] if r["provider"] == "cpu"}
    for name, row in wasm.items():
        agreement = row["agreement"]
        assert agreement["against"] == "cpu" and set(agreement["tasks"]) == {"sentiment", "pairs"}
        sentiment, pairs = agreement["tasks"]["sentiment"], agreement["tasks"]["pairs"]
        assert sentiment["of"] == row["metrics"]["sentiment"]["n"] and 0 <= sentiment["labels_changed"] <= sentiment["of"]
        assert pairs["labels_changed"] is None and pairs["max_abs_diff"] is not None
        if row["variant"] in ("fp32", "int8-static-minmax"):
            assert sentiment["max_abs_diff"] < 1e-4 and pairs["max_abs_diff"] < 1e-4, (name, agreement)
            assert sentiment["labels_changed"] == 0
            assert row["metrics"]["sentiment"]["value"] == cpu[name]["metrics"]["sentiment"]["value"]
        print(name, agreement)  # the measured disagreement, for the record (-s)


def test_report_md_names_the_web_runtime(web_run):
    text = (web_run / "report.md").read_text()
    assert "On the web runtime" in text and "onnxruntime-web" in text


def test_the_bundle_of_a_web_run_says_what_its_file_did_in_the_browser(web_run):
    manifest = json.loads((web_run / "bundle" / "manifest.json").read_text())
    readme = (web_run / "bundle" / "README.md").read_text()
    web = manifest["web"]
    assert web["provider"] == "wasm" and web["runtime"].startswith("onnxruntime-web ")
    assert set(web["agreement"]["tasks"]) == {"sentiment", "pairs"} and web["latency_ms"]["p95"] > 0
    browser = readme.split("\n## Browser\n", 1)[1]
    assert f"Measured by the run in {web['runtime']}" in browser and "answers the same" in browser
