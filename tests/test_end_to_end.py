"""End-to-end latency: text in, outputs out, with the tokenizer the bundle ships, and budgets that bound it."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.data import load_texts
from edgekit.errors import BenchConfigError, RecipeError
from edgekit.modeling.models import load_tokenizer
from edgekit.pipeline import distill_and_export
from edgekit.runtime.bench import BenchConfig, end_to_end_requests, run_benchmark
from edgekit.runtime.feeds import app_encoder, text_feeds
from edgekit.stages.loading import recipe_from_dict
from edgekit.testing import tiny_recipe

# Real texts that stress a WordPiece tokenizer: accents, CJK, emoji, unknown words, one past max_length.
HARD_TEXTS = ["Café naïve résumé, déjà vu!", "東京 😀 zzzqqq-xylophone's", "  spaces   and\ttabs ", "x " * 400]


def test_app_encoder_gives_the_same_ids_as_the_transformers_call(tiny_bert):
    # setup: real review texts and the hard ones, one at a time and as a padded batch
    tokenizer = load_tokenizer(str(tiny_bert))
    texts = load_texts("rotten_tomatoes")[:200] + HARD_TEXTS
    # execute
    encode, what = app_encoder(tokenizer, 64)
    # assert: the Rust tokenizer.json an app ships is the tokenizer edgekit scores with
    assert what == "tokenizers (tokenizer.json)"
    for text in texts:
        mine, reference = encode([text]), text_feeds(tokenizer, [text], 64)
        assert all(np.array_equal(mine[k], reference[k]) for k in reference), text
    batch, reference = encode(texts[:16]), text_feeds(tokenizer, texts[:16], 64)
    assert all(np.array_equal(batch[k], reference[k]) for k in reference)
    assert encode([HARD_TEXTS[-1]])["input_ids"].shape == (1, 64)  # truncated at max_length


def test_end_to_end_requests_return_the_models_outputs_on_the_tokenized_texts(tiny_bert, tiny_bert_onnx):
    # setup
    session = ort.InferenceSession(str(tiny_bert_onnx), providers=["CPUExecutionProvider"])
    config = BenchConfig(end_to_end=True, lengths_from="rotten_tomatoes", tokenizer=str(tiny_bert), batch=2)
    # execute
    batches, request, record = end_to_end_requests(session, tiny_bert_onnx, config)
    # assert: one timed call is the whole request: tokenize the texts, run the file
    names = [i.name for i in session.get_inputs()]
    expected = session.run(None, text_feeds(load_tokenizer(str(tiny_bert)), batches[0], record["truncated_at"],
                                            names=tuple(names)))
    assert all(np.allclose(a, b) for a, b in zip(request(batches[0]), expected))
    assert len(batches) == 256 and all(len(b) == 2 for b in batches)
    assert record["mode"] == "end_to_end" and record["tokenizer"] == "tokenizers (tokenizer.json)"


def test_bench_end_to_end_records_what_it_timed_and_needs_texts(tiny_bert, tiny_bert_onnx):
    result = run_benchmark(tiny_bert_onnx, BenchConfig(end_to_end=True, lengths_from="rotten_tomatoes",
                                                       tokenizer=str(tiny_bert), min_runs=50, min_seconds=0))
    assert result["runs"] >= 50 and result["inputs"]["mode"] == "end_to_end"
    assert result["inputs"]["token_lengths"]["max"] <= result["inputs"]["truncated_at"]
    with pytest.raises(BenchConfigError, match="--lengths-from"):
        run_benchmark(tiny_bert_onnx, BenchConfig(end_to_end=True, min_runs=20, min_seconds=0))


def test_cli_bench_end_to_end(run_cli, tiny_bert, tiny_bert_onnx, tmp_path):
    out = tmp_path / "e2e.bench.json"
    result = run_cli("bench", tiny_bert_onnx, "--end-to-end", "--lengths-from", "lee", "--tokenizer", tiny_bert,
                     "--min-runs", 30, "--min-seconds", 0, "-o", out)
    assert result.exit_code == 0, result.output
    assert "text in -> outputs out (tokenizer: tokenizers (tokenizer.json))" in result.output
    assert json.loads(out.read_text())["config"]["end_to_end"] is True


@pytest.fixture(scope="module")
def e2e_run(tiny_bert, warm_cache):
    """A tiny run whose budget bounds the end-to-end latency (on a copy of the finished tiny run's cache)."""
    cache = warm_cache("e2e")
    recipe = tiny_recipe(tiny_bert, budget={"speedup": 0.5, "scope": "end-to-end"})
    return distill_and_export(recipe, out=cache.parent / "run", cache_dir=cache, echo=print), cache.parent


def test_every_text_file_is_timed_model_only_and_end_to_end(e2e_run):
    report, root = e2e_run
    for row in report.files:
        model, whole = row["latency_ms"], row["latency_e2e_ms"]
        assert whole["p50"] <= whole["p95"] <= whole["p99"] and whole["runs"] >= 20
        raw = json.loads((root / "run" / row["bench"].replace(".bench.json", ".e2e.bench.json")).read_text())
        assert raw["inputs"]["mode"] == "end_to_end" and raw["latency_ms"]["p95"] == whole["p95"]
        assert model["p95"] != whole["p95"]  # two measurements, not one copied
        # and the app graph (the tokenizer inside), timed the same way from its own raw timing
        app = json.loads((root / "run" / row["app_graph"]["bench"]).read_text())
        assert app["inputs"]["tokenizer"] == "inside the graph"
        assert app["latency_ms"]["p95"] == row["latency_app_ms"]["p95"]
        assert app["config"] == raw["config"] and row["latency_app_ms"]["runs"] >= 20


def test_an_end_to_end_budget_is_derived_from_and_judges_end_to_end_latency(e2e_run):
    report, _ = e2e_run
    budget = report.data["budget"]
    teacher = next(r for r in report.files if r["name"] == "teacher-fp32")
    assert budget["scope"] == "end-to-end"
    # each file on its faster path (tokenizer.json + model.onnx, or its app graph), the teacher's reference too
    paths = {"tokenizer.json": "latency_e2e_ms", "app graph": "latency_app_ms"}

    def faster(row):
        return min((row[key]["p95"], path) for path, key in paths.items() if row.get(key))

    assert (budget["teacher"]["ms"], budget["teacher"]["path"]) == faster(teacher)
    assert budget["teacher"]["e2e_ms"] == teacher["latency_e2e_ms"]["p95"]
    assert budget["teacher"]["app_ms"] == teacher["latency_app_ms"]["p95"]
    assert budget["teacher"]["model_ms"] == teacher["latency_ms"]["p95"]
    assert budget["ms"] == pytest.approx(faster(teacher)[0] / 0.5)
    assert all(row["meets_budget"] == (faster(row)[0] <= budget["limit_ms"]) for row in report.files)
    assert all(row["end_to_end_path"] == faster(row)[1] for row in report.files)
    decision = report.data["decision"]["cpu"]
    if decision is not None:
        pick = next(r for r in report.files if r["name"] == decision["ships"])
        assert decision["ships_path"] == faster(pick)[1]
    # the probes were judged as the files are: each untrained candidate on both paths, its faster one counting
    for probe in report.data["probes"]:
        assert all(record["latency_e2e_ms"] and record["latency_app_ms"] for record in probe["variants"].values())
        assert probe["feasible"] == any(faster(record)[0] <= budget["limit_ms"] for record in probe["variants"].values())


def test_an_end_to_end_budget_needs_text(tmp_path):
    recipe = {"name": "digits", "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune"},
              "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
              "budget": {"speedup": 2, "scope": "end-to-end"}}
    with pytest.raises(RecipeError, match="scope: end-to-end times text in to outputs out"):
        recipe_from_dict(recipe)
