"""`python -m bench`'s code path on a tiny teacher: sweep, Optimum baselines, model2vec, scores, floor, interleaved
timing, paired intervals, the frontier chart."""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from bench.compare import (
    FIXED,
    _feed,
    compare,
    e2e_shape,
    markdown,
    optimum_preset,
    quick_recipe,
    shapes,
    versus_model2vec,
    write_results,
)
from bench.model2vec_row import available as model2vec_available
from edgekit.recipe import Recipe
from edgekit.testing import tiny_recipe

# The tiny BERT is 32 wide: pca_dims 16 reduces it as 256 reduces MiniLM's 384. Without model2vec installed the
# comparison runs without its row and the model2vec tests skip.
M2V_DIMS = (16,) if model2vec_available() else ()


class QuickBench(NamedTuple):
    recipe: Recipe
    results: dict
    path: Path  # the results JSON written beside its markdown
    root: Path  # holds work/ (the sweep, the Optimum baselines), cache/ and results/


@pytest.fixture(scope="module")
def quick_bench(tiny_bert, tmp_path_factory):
    """One quick comparison per module (sweep, baselines, scores, timing are the slow part); tests only read it.
    Optimum's baseline files are made in an environment with optimum-onnx (transformers < 4.58): the oldest
    stack's venv, which .ci/run sets up before `make test`; without one these tests skip, saying so."""
    from bench.optimum_files import optimum_python

    if optimum_python() is None:
        pytest.skip("Optimum's baseline needs a Python with optimum-onnx: make setup-oldest")
    root = tmp_path_factory.mktemp("bench")
    recipe = quick_recipe(tiny_recipe(tiny_bert), max_test=60)
    results = compare(recipe, ["500", "x1"], root / "work", root / "cache", None, quick=True, echo=print,
                      model2vec_dims=M2V_DIMS)
    path = write_results(results, root / "results")
    return QuickBench(recipe, results, path, root)


def entry_names(results):
    return [e["name"] for e in results["entries"]]


def picks_of(results):
    """edgekit's files in the comparison: the sweep's picks and the rest of its frontier (budgets [])."""
    return [e for e in results["entries"] if "budgets" in e]


def model2vec_of(results):
    return [e for e in results["entries"] if e["kind"] == "model2vec"]


# the entries: the three things a user would run, then edgekit's pick(s), each with every figure

def test_entries_are_the_three_user_baselines_then_model2vec_then_the_edgekit_picks(quick_bench):
    # setup
    names = entry_names(quick_bench.results)
    m2v = len(M2V_DIMS)
    # assert
    assert names[:3] == ["teacher PyTorch eager", "teacher fp32 (Optimum)", "teacher int8 (Optimum dynamic)"]
    assert names[3:3 + m2v] == [f"model2vec pca {d}" for d in M2V_DIMS]
    assert len(names) >= 4 + m2v and all(n.startswith("edgekit ") for n in names[3 + m2v:])


def test_the_eager_teacher_and_its_fp32_export_score_the_same(quick_bench):
    # setup: same weights, same head, one text per run
    eager, fp32, *_ = quick_bench.results["entries"]
    # assert
    for task, metric in fp32["metrics"].items():
        assert abs(eager["metrics"][task]["value"] - metric["value"]) < 1e-6


def test_the_bench_scores_each_pick_as_the_sweeps_report_does(quick_bench):
    # setup: the bench scores text in -> outputs out with the app's tokenizer, the sweep with its own feeds
    picks = picks_of(quick_bench.results)
    # assert: the bench's own scoring of a pick agrees with what the sweep's report says of the same file
    for pick in picks:
        for task, value in pick["run_metrics"].items():
            assert abs(pick["metrics"][task]["value"] - value) < 1e-9


# latency at the fixed shape and at every task's lengths; the ratios are the quotients of those

def test_latency_is_timed_at_the_fixed_shape_at_every_tasks_lengths_and_end_to_end(quick_bench):
    # setup
    entries = quick_bench.results["entries"]
    # assert: every entry, model2vec too, at the model-only shapes and text in -> outputs out per task
    for entry in entries:
        assert set(entry["latency_ms"]) == {FIXED, "sentiment lengths", "pairs lengths", "sentiment end-to-end",
                                            "pairs end-to-end"}
    assert quick_bench.results["e2e_shapes"] == {"sentiment": e2e_shape("sentiment"), "pairs": e2e_shape("pairs")}


def test_end_to_end_pools_are_the_texts_whose_feeds_time_the_model_alone(quick_bench, tiny_bert):
    # setup: the same real test texts, once as feeds (the model alone), once as text (tokenizer inside the call)
    from types import SimpleNamespace

    from edgekit.loading import load_tasks
    from edgekit.models import load_tokenizer

    tasks = load_tasks(quick_bench.recipe)
    teacher = SimpleNamespace(tokenizer=load_tokenizer(str(tiny_bert)), max_length=64)
    # execute
    pools = shapes(tasks, teacher, 128, teacher.tokenizer.vocab_size)
    # assert: an end-to-end call gets a string, and tokenizing it gives the model-only pool's feed
    for task in tasks:
        texts, feeds = pools[e2e_shape(task.name)], pools[f"{task.name} lengths"]
        assert len(texts) == len(feeds) > 0 and all(isinstance(t, str) for t in texts)
        for text, feed in zip(texts, feeds):
            again = _feed(teacher.tokenizer, text, teacher.max_length)
            assert all(np.array_equal(again[k], feed[k]) for k in feed)


def test_every_entrys_latency_percentiles_are_positive_and_ordered(quick_bench):
    # setup
    entries = quick_bench.results["entries"]
    # assert
    for entry in entries:
        lat = entry["latency_ms"][FIXED]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]


def test_speedup_ratios_are_the_fp32_files_p95_over_each_entrys(quick_bench):
    # setup
    entries = quick_bench.results["entries"]
    fp32 = entries[1]
    # assert
    for entry in entries:
        lat = entry["latency_ms"][FIXED]
        assert entry["ratios"][FIXED]["fp32_over_this_p95"] == fp32["latency_ms"][FIXED]["p95"] / lat["p95"]
    assert fp32["ratios"][FIXED]["fp32_over_this_p95"] == 1.0


# the floor: int8 work in the int8 files only; the eager teacher does the fp32 file's work

def test_int8_work_is_counted_in_the_int8_file_only(quick_bench):
    # setup
    _, fp32, int8, *_ = quick_bench.results["entries"]
    # assert
    assert fp32["work"]["int8_gop"] == 0 and int8["work"]["int8_gop"] > 0
    assert all(e["work"]["matmuls"] == 0 and e["floor_ms"] is None for e in model2vec_of(quick_bench.results))


def test_the_eager_teacher_does_the_fp32_files_work_and_every_entry_has_a_floor(quick_bench):
    # setup
    results = quick_bench.results
    eager, fp32, *_ = results["entries"]
    # assert
    assert eager["work"] == fp32["work"]
    assert all(0 < e["floor_ms"] for e in results["entries"] if e["kind"] != "model2vec")


def test_this_cpus_fp32_and_int8_matmul_peaks_are_measured(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert results["peaks"]["fp32_gflops"] > 0 and results["peaks"]["int8_gops"] > 0


# the goal, the budgets and where they came from

def test_the_goal_is_judged_for_every_pick(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert [g["entry"] for g in results["goal"]] == [e["name"] for e in picks_of(results)]


def test_results_list_every_budget_swept(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert sorted(results["budgets"]) == ["500 ms", "x1"]


def test_a_relative_budget_is_the_teachers_fp32_file_as_timed_in_the_sweep(quick_bench):
    # setup: x1 is the sweep's own relative budget
    results = quick_bench.results
    sweep_report = json.loads((quick_bench.root / "work/sweep/report.json").read_text())
    # assert
    assert results["teacher_fp32_p95_in_sweep_ms"] == sweep_report["budget"]["teacher"]["ms"]
    assert results["budgets_ms"][results["budgets"].index("x1")] == sweep_report["budget"]["teacher"]["ms"]


def test_the_optimum_baseline_is_made_with_the_preset_of_this_cpu(quick_bench):
    # setup
    results = quick_bench.results
    # assert
    assert results["baseline_made_by"]["preset"] == optimum_preset(results["machine"])


# the files are where the results say

def test_the_saved_json_and_markdown_hold_the_results(quick_bench):
    # setup
    fp32 = quick_bench.results["entries"][1]
    path = quick_bench.path
    saved = json.loads(path.read_text())
    # assert
    assert saved["entries"][1]["file"] == fp32["file"] and "| teacher fp32 (Optimum) |" in markdown(saved)
    assert path.with_suffix(".md").read_text() == markdown(saved)


def test_comparing_the_same_sweep_again_keeps_its_budgets_and_the_teacher_timing_they_came_from(quick_bench):
    # setup: --run, the sweep the module's comparison made
    recipe, results, _, root = quick_bench
    said = []
    # execute
    again = compare(recipe, ["999"], root / "work", root / "cache", root / "work/sweep", quick=True, echo=said.append,
                    model2vec_dims=M2V_DIMS)
    # assert
    assert again["budgets"] == results["budgets"] and again["budgets_ms"] == results["budgets_ms"]
    assert again["teacher_fp32_p95_in_sweep_ms"] == results["teacher_fp32_p95_in_sweep_ms"]
    assert [e["budgets"] for e in picks_of(again)] == [e["budgets"] for e in picks_of(results)]
    # model2vec's distilled folder is reused, not distilled again
    assert [e["file"] for e in model2vec_of(again)] == [e["file"] for e in model2vec_of(results)]
    assert all(any(line.startswith(f"  model2vec pca_dims={d}: cached") for line in said) for d in M2V_DIMS)


def test_the_optimum_baseline_uses_the_preset_of_the_cpu_at_hand():
    x86 = {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False}
    assert optimum_preset({"arch": "x86_64", "instruction_sets": x86}) == "avx2"
    assert optimum_preset({"arch": "x86_64", "instruction_sets": {**x86, "avx512f": True}}) == "avx512"
    assert optimum_preset({"arch": "x86_64", "instruction_sets": {**x86, "avx512f": True,
                                                                   "avx512_vnni": True}}) == "avx512_vnni"
    assert optimum_preset({"arch": "aarch64", "instruction_sets": {"dotprod": True}}) == "arm64"


# model2vec: distilled from the same teacher folder, scored with a head fitted on its own embeddings

def test_model2vec_is_distilled_from_the_recipes_teacher_to_the_pca_size_asked(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    (m2v,) = model2vec_of(quick_bench.results)
    folder = Path(quick_bench.results["root"]) / m2v["file"]
    config = json.loads((folder / "config.json").read_text())
    # assert: its own saved folder, 16 dims, heads fitted on the task's training split
    assert m2v["dim"] == 16 and config["hidden_dim"] == 16 and config["apply_pca"] == 16
    assert folder.is_relative_to(quick_bench.root / "work" / "model2vec")
    assert m2v["heads_fitted_on"] == {"sentiment": len(_train_texts(quick_bench.recipe, "sentiment"))}
    assert m2v["size_bytes"] == (folder / "model.safetensors").stat().st_size


def _train_texts(recipe, task_name):
    from edgekit.loading import load_tasks

    return next(t for t in load_tasks(recipe) if t.name == task_name).train["text"]


def test_the_model2vec_runner_is_its_encode_then_a_head_fitted_on_its_embeddings(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    from bench.model2vec_row import Model2VecRunner
    from edgekit.loading import load_tasks
    from edgekit.teacher import fit_linear_head

    tasks = load_tasks(quick_bench.recipe)
    sentiment = next(t for t in tasks if t.name == "sentiment")
    (m2v,) = model2vec_of(quick_bench.results)
    runner = Model2VecRunner(Path(quick_bench.results["root"]) / m2v["file"], tasks)
    text = sentiment.test["text"][0]
    # execute
    out = runner.text_outputs(text)
    head = fit_linear_head(runner.model.encode(list(sentiment.train["text"])), sentiment.train["label"],
                           len(sentiment.labels))
    # assert: the embedding is model2vec's own encode, the logits that head on it
    np.testing.assert_allclose(out["embedding"], runner.model.encode([text])[0], atol=1e-6)
    expected = head.weight.detach().numpy() @ out["embedding"] + head.bias.detach().numpy()
    np.testing.assert_allclose(out["sentiment_logits"], expected, rtol=1e-4, atol=1e-4)
    assert set(out) == {"embedding", "sentiment_logits"}


def test_the_model2vec_model_alone_is_the_gather_and_mean_its_encode_runs(quick_bench):
    # setup: the ids model2vec's own tokenizer makes of a text
    pytest.importorskip("model2vec")
    from bench.model2vec_row import Model2VecRunner

    (m2v,) = model2vec_of(quick_bench.results)
    runner = Model2VecRunner(Path(quick_bench.results["root"]) / m2v["file"], [])
    text = "a quiet film about a loud family"
    ids = np.array(runner.model.tokenize([text]), dtype=np.int64)  # (1, seq)
    # execute
    alone = runner.run({"input_ids": ids})
    # assert: timing `run` at seq 128 times the same work `encode` does after tokenizing (float16 vectors)
    np.testing.assert_allclose(alone[0], runner.model.encode([text])[0].astype(np.float32), atol=2e-3)


# the paired comparison of each pick with model2vec

def test_each_pick_is_compared_with_model2vec_on_the_same_examples(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    results = quick_bench.results
    (m2v,) = model2vec_of(results)
    # assert: one row per pick, each task's difference the difference of the two metrics, inside its interval
    assert [(v["pick"], v["model2vec"]) for v in results["versus_model2vec"]] == \
        [(p["name"], m2v["name"]) for p in picks_of(results)]
    for v in results["versus_model2vec"]:
        pick = next(e for e in results["entries"] if e["name"] == v["pick"])
        for task, d in v["difference"].items():
            assert d["value"] == pytest.approx(pick["metrics"][task]["value"] - m2v["metrics"][task]["value"])
            assert d["n"] == pick["metrics"][task]["n"]
            assert d["ci95"] is None or d["ci95"][0] <= d["value"] <= d["ci95"][1]
        assert v["beats"] == all(d["ci95"] is not None and d["ci95"][0] > 0 for d in v["difference"].values())


def test_a_pick_beats_model2vec_only_when_every_tasks_paired_interval_is_above_zero():
    # setup: the same 200 test examples; the pick right on 180 of them, model2vec on 120 (a clear lead), and
    # a pick exactly as good as model2vec (a zero difference: no lead at all)
    from edgekit.data.tasks import TaskData
    from edgekit.recipe import TaskSpec

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, size=200)
    task = TaskData(TaskSpec.model_validate({"name": "t", "kind": "classification", "metric": "accuracy",
                                             "data": {"source": "rotten_tomatoes"}}),
                    train={}, test={"text": [""] * 200, "label": gold})
    right = gold.copy()
    right[:20] = 1 - right[:20]
    worse = gold.copy()
    worse[100:180] = 1 - worse[100:180]
    m2v = {"name": "model2vec pca 256", "kind": "model2vec", "outcomes": {"t": worse}}
    ahead = {"name": "edgekit A", "kind": "onnx", "budgets": ["x8"], "outcomes": {"t": right}}
    level = {"name": "edgekit B", "kind": "onnx", "budgets": ["x4"], "outcomes": {"t": worse.copy()}}
    # execute
    versus = versus_model2vec([m2v, ahead, level], [task])
    # assert
    assert [(v["pick"], v["beats"]) for v in versus] == [("edgekit A", True), ("edgekit B", False)]
    assert versus[0]["difference"]["t"]["value"] == pytest.approx(0.9 - 0.6)
    assert versus[1]["difference"]["t"]["value"] == 0.0


def test_the_markdown_says_per_pick_whether_it_beats_model2vec(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    text = quick_bench.path.with_suffix(".md").read_text()
    # assert
    assert "## Against model2vec" in text
    for v in quick_bench.results["versus_model2vec"]:
        assert any(line.startswith(f"| {v['pick']} | {v['model2vec']} |") and
                   line.rstrip().endswith(f"| {'yes' if v['beats'] else 'no'} |") for line in text.splitlines())


# the frontier chart beside the json and markdown

def test_the_frontier_chart_names_every_entry_in_one_panel_per_task(quick_bench):
    # setup
    svg_path = quick_bench.path.with_name(quick_bench.path.stem + "-frontier.svg")
    svg = svg_path.read_text()
    # assert: a standalone SVG, a panel title per task, every entry labelled (text stays text in the SVG)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "sentiment (accuracy)" in svg and "pairs (spearman)" in svg
    for entry in quick_bench.results["entries"]:
        assert svg.count(entry["name"].removeprefix("edgekit ")) >= 2, entry["name"]  # in both panels


def test_the_saved_json_leaves_the_per_example_outcomes_out(quick_bench):
    # setup
    saved = json.loads(quick_bench.path.read_text())
    # assert: kept in memory for the paired intervals, not written (thousands of numbers per entry)
    assert all("outcomes" in e for e in quick_bench.results["entries"])
    assert not any("outcomes" in e for e in saved["entries"])


def test_quick_mode_drops_the_quality_floor_so_its_one_epoch_student_is_still_picked():
    # setup: the default recipe asks 97% of the teacher on every task
    from bench.compare import RECIPE
    from edgekit.loading import load_recipe

    recipe = load_recipe(RECIPE)
    # execute
    quick = quick_recipe(recipe)
    # assert
    assert recipe.budget.min_retention == 97 and quick.budget.min_retention is None
