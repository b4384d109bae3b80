"""The second end-to-end path of the time stage: each text file's app graph (the tokenizer inside,
edgekit/runtime/app_graph.py), built, checked against tokenizer.json and timed text in -> outputs out exactly as the
tokenizer.json path is (measure.time_rows), or the reason the file does not ship that way."""

import json
import shutil

import pytest

from edgekit.recipe import Budget
from edgekit.runtime.app_graph import PROBE_TEXTS
from edgekit.stages.measure import Lab, Timing, app_paths, time_rows
from edgekit.trust.cache import Cache

MAX_LENGTH = 64
# Real texts the tiny vocabulary covers; ODD has a character it lacks inside a word: tokenizer.json makes the word one
# [UNK], the extensions' op keeps the pieces before it (app_graph.py's known differences).
TEXTS = ["a great and moving film", "the plot is thin but the cast is good", "bad", "an honest , funny movie"]
ODD = "Heartwarming here, thanks to Petter Næss and his cast."


def _run(tmp_path, tiny_bert, tiny_bert_onnx, texts):
    """A run folder with one text file and the run's tokenizer copy, and the Timing the time stage gets."""
    run = tmp_path / "run"
    (run / "candidates" / "x").mkdir(parents=True)
    shutil.copy(tiny_bert_onnx, run / "candidates" / "x" / "model.onnx")
    shutil.copytree(tiny_bert, run / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    budget = Budget(ms=1000, min_runs=20, min_seconds=0, rounds=1, min_retention=None)
    timing = Timing(budget.measurement, str(tiny_bert), MAX_LENGTH, None, text=True, texts_file=texts_file)
    row = {"name": "x-fp32", "student": "x", "variant": "fp32", "provider": "cpu", "onnx": "candidates/x/model.onnx"}
    return run, timing, row


def _lab(run, timing, cache) -> Lab:
    """What the time stage receives: the Lab, of which it reads the run folder, timing, cache, echo and target."""
    return Lab(exporting=None, scoring=None, timing=timing, cache=cache, run=run, providers=("cpu",), variants=(),
               echo=print)


def test_a_text_file_is_timed_end_to_end_with_its_app_graph_too(tmp_path, tiny_bert, tiny_bert_onnx):
    # setup
    run, timing, row = _run(tmp_path, tiny_bert, tiny_bert_onnx, TEXTS)
    cache = Cache(tmp_path / "cache")
    # execute
    [timed], _ = time_rows([row], _lab(run, timing, cache))
    [again], _ = time_rows([row], _lab(run, timing, cache))
    # assert: a second figure beside the tokenizer.json one, from its own raw timing of a graph that takes texts
    app, two_step = timed["latency_app_ms"], timed["latency_e2e_ms"]
    assert set(app) == set(two_step) and app["p50"] <= app["p95"] <= app["p99"] and app["runs"] >= 20
    record = timed["app_graph"]
    assert record["path"] == "app graph" and record["words"] == "model.app.onnx, tokenizer inside"
    assert record["checked"] == {"texts": len(TEXTS), "probe_texts": len(PROBE_TEXTS),
                                 "token_ids": "identical to tokenizer.json's (ids, mask, padding)"}
    assert record["tokenizer"]["max_length"] == MAX_LENGTH and "latency_app_why" not in timed
    raw = json.loads((run / record["bench"]).read_text())
    assert raw["inputs"]["tokenizer"] == "inside the graph" and raw["latency_ms"]["p95"] == app["p95"]
    two_step_raw = json.loads((run / "candidates/x/model.e2e.bench.json").read_text())
    assert raw["config"] == two_step_raw["config"]
    # both paths over whole passes of the same pool (the 4 texts), so their percentiles are over the same texts
    assert raw["inputs"]["pool"]["sha256"] == two_step_raw["inputs"]["pool"]["sha256"]
    assert raw["runs"] % len(TEXTS) == two_step_raw["runs"] % len(TEXTS) == 0
    # the rerun builds and times nothing: both paths come from the cache, each under its own key
    assert again["latency_app_ms"]["cached"] and again["latency_e2e_ms"]["cached"]
    assert again["latency_app_ms"]["p95"] == app["p95"] != again["latency_e2e_ms"]["p95"]
    assert len(list((cache.root / "app-graphs").iterdir())) == 1


def test_a_tokenizer_the_op_differs_from_gets_a_reason_and_no_app_figure(tmp_path, tiny_bert, tiny_bert_onnx):
    # setup: one timing text the op tokenizes differently from tokenizer.json
    run, timing, row = _run(tmp_path, tiny_bert, tiny_bert_onnx, [*TEXTS, ODD])
    # execute
    [timed], _ = time_rows([row], _lab(run, timing, Cache(tmp_path / "cache")))
    # assert: the tokenizer.json path is timed; the app path is not offered, and the row says why
    assert timed["latency_e2e_ms"]["p95"] > 0 and timed["latency_app_ms"] is None and "app_graph" not in timed
    assert "differs from tokenizer.json on 1 of the checked texts" in timed["latency_app_why"]
    assert "Petter" in timed["latency_app_why"]


def test_a_tokenizer_that_is_not_wordpiece_gets_a_reason(tmp_path, tiny_bert, tiny_bert_onnx):
    # setup: the run's tokenizer.json with another pre-tokenizer than BERT's
    run, timing, row = _run(tmp_path, tiny_bert, tiny_bert_onnx, TEXTS)
    spec = json.loads((run / "tokenizer" / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (run / "tokenizer" / "tokenizer.json").write_text(json.dumps(spec))
    # execute
    [found] = app_paths([(run / row["onnx"], "cpu")], run, timing, Cache(tmp_path / "cache"))
    # assert
    assert found.file is None and "not offered: the tokenizer splits words with Whitespace" in found.why


@pytest.mark.parametrize("provider, words", [("cuda", "CPU provider only"), ("wasm", "onnxruntime-web does not load")])
def test_providers_where_the_extensions_ops_do_not_run_say_so(tmp_path, tiny_bert, tiny_bert_onnx, provider, words):
    # setup
    run, timing, row = _run(tmp_path, tiny_bert, tiny_bert_onnx, TEXTS)
    # execute
    [found] = app_paths([(run / row["onnx"], provider)], run, timing, Cache(tmp_path / "cache"))
    # assert: nothing built for it, and the reason names the provider's limit
    assert found.file is None and words in found.why
    assert not (tmp_path / "cache" / "app-graphs").exists()
