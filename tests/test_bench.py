import json
import time
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.errors import BenchConfigError
from edgekit.modeling.models import load_tokenizer
from edgekit.runtime.bench import BenchConfig, latency_stats, run_benchmark

QUICK = {"min_runs": 60, "min_seconds": 0.0, "warmup_runs": 3}


def _relu_model(path, dims):
    """A one-node graph whose input has the given (possibly symbolic) dims."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fixed_shape_result_is_complete_and_consistent(tiny_bert_onnx):
    # execute
    result = run_benchmark(tiny_bert_onnx, BenchConfig(**QUICK))
    # assert: the shape asked for, on the provider asked for
    assert result["inputs"]["shapes"] == {name: [1, 128] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert result["session"]["session_providers"][0] == "CPUExecutionProvider"
    assert result["session"]["threads"] == 1
    # assert: percentiles ordered and recomputable from the raw samples
    lat = result["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert result["runs"] == len(result["samples_ms"]) >= 60
    assert lat["p95"] == pytest.approx(np.percentile(result["samples_ms"], 95), rel=1e-3)
    assert all(lat["ci95"][q][0] <= lat[q] <= lat["ci95"][q][1] for q in ("p50", "p95", "p99"))
    # assert: cold costs, memory, file and machine are recorded
    assert result["session_create_ms"] > 0 and result["first_inference_ms"] > 0
    assert result["memory_mb"]["peak_rss"] > result["memory_mb"]["session"] >= 0
    assert result["model"]["size_bytes"] == tiny_bert_onnx.stat().st_size
    assert result["cpu"]["name"] and "avx2" in result["cpu"]["instruction_sets"] or result["cpu"]["arch"] != "x86_64"
    assert result["onnxruntime_version"] == result["versions"]["onnxruntime"]
    assert result["inputs"]["pool"]["batches"] == 1 and result["inputs"]["pool"]["passes"] == result["runs"]
    json.dumps(result)  # JSON-ready


def test_minimum_time_keeps_the_loop_running(tiny_bert_onnx):
    result = run_benchmark(tiny_bert_onnx, BenchConfig(min_runs=1, min_seconds=0.3, warmup_runs=0))
    assert result["timed_seconds"] >= 0.3 and result["runs"] > 1


def test_inputs_follow_the_length_distribution_of_a_data_file(tiny_bert_onnx, tmp_path):
    # setup: texts of very different lengths
    texts = ["good", "a dull film", "the best story " * 5, "too long and too dull " * 8]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts))
    # execute
    result = run_benchmark(tiny_bert_onnx, BenchConfig(lengths_from=str(data), batch=1, **QUICK))
    # assert: recorded lengths are the tokenizer's, recomputed independently
    tokenizer = load_tokenizer(str(tiny_bert_onnx.parent))
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    recorded = result["inputs"]["token_lengths"]
    assert recorded["max"] == max(lengths) and recorded["mean"] == pytest.approx(np.mean(lengths))
    assert result["inputs"]["mode"] == "lengths_from"


def test_lengths_from_a_built_in_corpus_in_batches(tiny_bert_onnx):
    result = run_benchmark(tiny_bert_onnx, BenchConfig(lengths_from="rotten_tomatoes", batch=4, **QUICK))
    assert result["inputs"]["texts"] == 12808 and result["inputs"]["shapes"]["input_ids"][0] == 4
    assert 10 < result["inputs"]["token_lengths"]["mean"] < 128


def test_options_that_do_not_apply_to_a_static_graph_are_refused(tmp_path):
    model = _relu_model(tmp_path / "static.onnx", [1, 16])
    with pytest.raises(BenchConfigError, match="no dynamic seq axis"):
        run_benchmark(model, BenchConfig(seq_len=32, **QUICK))
    with pytest.raises(BenchConfigError, match="no dynamic batch axis"):
        run_benchmark(model, BenchConfig(batch=8, **QUICK))
    assert run_benchmark(model, BenchConfig(**QUICK))["inputs"]["shapes"] == {"x": [1, 16]}


def test_free_dimensions_must_be_named_by_the_user(tmp_path):
    model = _relu_model(tmp_path / "free.onnx", ["batch_size", "height"])
    with pytest.raises(BenchConfigError, match="--dim height=VALUE"):
        run_benchmark(model, BenchConfig(**QUICK))
    result = run_benchmark(model, BenchConfig(batch=2, dims={"height": 7}, **QUICK))
    assert result["inputs"]["shapes"] == {"x": [2, 7]}


def test_cli_writes_json_and_prints_percentiles(run_cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "r.json"
    result = run_cli("bench", tiny_bert_onnx, "--min-runs", 30, "--min-seconds", 0, "--seq-len", 16, "-o", out)
    assert result.exit_code == 0, result.output
    assert "p95" in result.output and "CPUExecutionProvider" in result.output
    assert json.loads(out.read_text())["inputs"]["shapes"]["input_ids"] == [1, 16]


def test_latency_stats_match_numpy_and_bracket_the_median():
    samples = np.random.default_rng(3).gamma(4.0, 1.0, size=2000)
    stats = latency_stats(samples)
    for q in (50, 90, 95, 99):
        assert stats[f"p{q}"] == pytest.approx(np.percentile(samples, q))
    low, high = stats["ci95"]["p50"]
    assert low < np.median(samples) < high and high - low < 0.5
    # the tail is estimated from fewer samples: its interval is wider
    assert np.diff(stats["ci95"]["p99"]) > np.diff(stats["ci95"]["p50"])


def test_image_dims_left_symbolic_by_the_exporter_come_from_the_config(tmp_path):
    from edgekit.runtime.export import ExportConfig, export_model
    from edgekit.testing import tiny_vit

    vit = tiny_vit(tmp_path / "vit")
    exported = export_model(str(vit), tmp_path / "out", ExportConfig(task="image-classification"))
    result = run_benchmark(exported.onnx_path, BenchConfig(batch=2, **QUICK))
    assert result["inputs"]["shapes"] == {"pixel_values": [2, 3, 16, 16]}


def test_export_folder_is_accepted_and_names_the_result(run_cli, tiny_bert_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("bench", tiny_bert_onnx.parent, "--min-runs", 10, "--min-seconds", 0, "--seq-len", 8)
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{tiny_bert_onnx.parent.name}.bench.json").is_file()


def test_lengths_need_a_tokenizer(tmp_path):
    model = _relu_model(tmp_path / "m.onnx", ["batch_size", "sequence_length"])
    with pytest.raises(BenchConfigError, match="--tokenizer FOLDER"):
        run_benchmark(model, BenchConfig(lengths_from="lee", **QUICK))


# Texts of many lengths in the tiny vocabulary's words: 30 of them, 1 to 30 words.
_WORDS = ["the", "film", "is", "good", "but", "the", "story", "is", "too", "long", "and", "a", "bit", "dull", "yet", "very", "funny", "at", "its", "best"]
VARIED = [" ".join(_WORDS[j % len(_WORDS)] for j in range(n)) for n in range(1, 31)]


def _texts_file(tmp_path, texts):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def test_a_fast_and_a_slow_file_are_timed_end_to_end_over_the_same_texts_each_as_often(tiny_bert_onnx, tmp_path,
                                                                                       monkeypatch):
    # setup: every request run_benchmark makes is seen; the "slow" file sleeps 3 ms in each (a teacher to a student)
    from edgekit.runtime import bench

    seen, slow = {}, {"on": False}
    real = bench.end_to_end_requests

    def spying(session, onnx_path, config):
        batches, request, record = real(session, onnx_path, config)
        calls = seen.setdefault("slow" if slow["on"] else "fast", [])

        def timed(texts):
            calls.append(tuple(texts))
            if slow["on"]:
                time.sleep(0.003)
            return request(texts)

        return batches, timed, record

    monkeypatch.setattr(bench, "end_to_end_requests", spying)
    config = BenchConfig(end_to_end=True, lengths_from=str(_texts_file(tmp_path, VARIED)), min_runs=20,
                         min_seconds=0.2, warmup_runs=0)
    # execute
    fast = run_benchmark(tiny_bert_onnx, config)
    slow["on"] = True
    slowed = run_benchmark(tiny_bert_onnx, config)
    # assert: very different run counts, each whole passes over the same pool of 20 of the 30 texts
    assert fast["runs"] > 3 * slowed["runs"]
    assert fast["inputs"]["pool"]["indices"] == slowed["inputs"]["pool"]["indices"]
    assert fast["inputs"]["pool"]["sha256"] == slowed["inputs"]["pool"]["sha256"]
    for result, calls in ((fast, seen["fast"]), (slowed, seen["slow"])):
        pool = result["inputs"]["pool"]
        assert pool["batches"] == pool["texts"] == 20 and result["runs"] % 20 == 0
        assert pool["passes"] == result["runs"] // 20 and result["runs"] == len(calls) - 1  # less the cold run
        texts = [(VARIED[i],) for i in pool["indices"]]
        assert Counter(calls[1:]) == Counter({text: pool["passes"] for text in texts})


def test_model_only_rounds_at_real_lengths_cover_whole_passes(tiny_bert_onnx, tmp_path):
    # setup
    source = str(_texts_file(tmp_path, VARIED))
    # execute: a pool of min(min_runs, texts) batches; at batch 2, 15 batches hold the 30 texts
    single = run_benchmark(tiny_bert_onnx, BenchConfig(lengths_from=source, min_runs=20, min_seconds=0.1))
    pairs = run_benchmark(tiny_bert_onnx, BenchConfig(lengths_from=source, batch=2, min_runs=20, min_seconds=0.1))
    # assert
    assert single["inputs"]["pool"]["batches"] == 20 and single["runs"] % 20 == 0
    assert pairs["inputs"]["pool"]["batches"] == 15 and pairs["inputs"]["pool"]["texts"] == 30
    assert pairs["runs"] % 15 == 0 and pairs["inputs"]["pool"]["passes"] == pairs["runs"] // 15


def test_the_pool_is_a_length_stratified_sample_sized_by_min_runs(tiny_bert_onnx, tmp_path):
    # setup: 980 short texts and 20 long ones (a task of snippets and one of documents, 2% of the texts)
    texts = [f"good film {i}" for i in range(980)] + [f"{'a very long story ' * 20} {i}" for i in range(20)]
    config = BenchConfig(end_to_end=True, lengths_from=str(_texts_file(tmp_path, texts)), min_runs=100,
                         min_seconds=0, warmup_runs=0)
    # execute
    result = run_benchmark(tiny_bert_onnx, config)
    # assert: 100 texts, 2% of them long, as in the source; and the record says so
    pool = result["inputs"]["pool"]
    assert pool["texts"] == len(set(pool["indices"])) == 100 and result["runs"] == 100
    assert sum(i >= 980 for i in pool["indices"]) == 2
    assert pool["token_lengths"]["max"] == result["inputs"]["token_lengths"]["max"]
    assert "length-stratified" in pool["drawn"] and "whole passes" in pool["timed"]
