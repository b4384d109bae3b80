"""`python -m bench`'s code path on a tiny teacher: sweep, Optimum baselines, model2vec (distilled, fitted to the
teacher, a classifier), scores, floor, interleaved timing, paired intervals, the frontier chart."""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from bench.compare import (
    FIXED,
    _feed,
    best_static,
    compare,
    e2e_shape,
    markdown,
    optimum_preset,
    quick_recipe,
    shapes,
    sweep_points,
    versus_model2vec,
    write_results,
)
from bench.model2vec_row import available as model2vec_available
from bench.model2vec_row import train_available as model2vec_train_available
from edgekit.data.tasks import TaskData
from edgekit.recipe import Recipe
from edgekit.testing import tiny_recipe

# The tiny BERT is 32 wide: pca_dims 16 reduces it as 256 reduces MiniLM's 384. Without model2vec installed the
# comparison runs without its row and the model2vec tests skip.
M2V_DIMS = (16,) if model2vec_available() else ()
# model2vec's trained entries need model2vec.train (it imports `datasets`): without it they are left out and skip.
M2V_TRAIN = bool(M2V_DIMS) and model2vec_train_available()
# Per PCA size: distilled, then (trained) fitted and a classifier for the one classification task.
M2V_NAMES = [n for d in M2V_DIMS for n in (f"model2vec pca {d}", *([f"model2vec pca {d} fitted",
                                                                   f"model2vec pca {d} classifier (sentiment)"]
                                                                  if M2V_TRAIN else []))]


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
                      model2vec_dims=M2V_DIMS, model2vec_train=M2V_TRAIN)
    path = write_results(results, root / "results")
    return QuickBench(recipe, results, path, root)


def entry_names(results):
    return [e["name"] for e in results["entries"]]


def picks_of(results):
    """edgekit's files in the comparison: the sweep's picks and the rest of its frontier (budgets [])."""
    return [e for e in results["entries"] if "budgets" in e]


def model2vec_of(results, variant="distilled"):
    """model2vec's entries of one variant (distilled, fitted, classifier), or of every variant (None)."""
    return [e for e in results["entries"] if e["kind"] == "model2vec" and variant in (None, e.get("variant"))]


# the entries: the three things a user would run, then edgekit's pick(s), each with every figure

def test_entries_are_the_three_user_baselines_then_model2vec_then_the_edgekit_picks(quick_bench):
    # setup
    names = entry_names(quick_bench.results)
    m2v = len(M2V_NAMES)
    # assert
    assert names[:3] == ["teacher PyTorch eager", "teacher fp32 (Optimum)", "teacher int8 (Optimum dynamic)"]
    assert names[3:3 + m2v] == M2V_NAMES
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
    # assert: every entry, model2vec too, at the model-only shapes and text in -> outputs out per task; model2vec's
    # classifier on its own task's texts only (and at the fixed shape)
    for entry in entries:
        expected = ({FIXED, "sentiment lengths", "sentiment end-to-end"} if entry.get("variant") == "classifier"
                    else {FIXED, "sentiment lengths", "pairs lengths", "sentiment end-to-end", "pairs end-to-end"})
        assert set(entry["latency_ms"]) == expected, entry["name"]
    assert quick_bench.results["e2e_shapes"] == {"sentiment": e2e_shape("sentiment"), "pairs": e2e_shape("pairs")}


def test_end_to_end_pools_are_the_texts_whose_feeds_time_the_model_alone(quick_bench, tiny_bert):
    # setup: the same real test texts, once as feeds (the model alone), once as text (tokenizer inside the call)
    from types import SimpleNamespace

    from edgekit.modeling.models import load_tokenizer
    from edgekit.stages.loading import load_tasks

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
    # model2vec's distilled folder is reused, not distilled again, and its trained models are not trained again
    assert [e["file"] for e in model2vec_of(again, None)] == [e["file"] for e in model2vec_of(results, None)]
    assert all(any(line.startswith(f"  model2vec pca_dims={d}: cached") for line in said) for d in M2V_DIMS)
    if M2V_TRAIN:
        assert sum(line.startswith("  model2vec fitted of ") and ": cached" in line for line in said) == len(M2V_DIMS)
        assert sum(line.startswith("  model2vec classifier-sentiment of ") and ": cached" in line
                   for line in said) == len(M2V_DIMS)


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
    from edgekit.stages.loading import load_tasks

    return next(t for t in load_tasks(recipe) if t.name == task_name).train["text"]


def test_the_model2vec_runner_is_its_encode_then_a_head_fitted_on_its_embeddings(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    from bench.model2vec_row import Model2VecRunner
    from edgekit.stages.loading import load_tasks
    from edgekit.stages.teacher import fit_linear_head

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

def test_each_pick_is_compared_with_every_model2vec_entry_on_the_same_examples(quick_bench):
    # setup
    pytest.importorskip("model2vec")
    results = quick_bench.results
    m2vs = model2vec_of(results, None)
    # assert: one row per (model2vec entry, edgekit file), each task's difference the difference of the two
    # metrics, inside its interval, with both sides' end-to-end p95 on that task's texts
    assert [(v["pick"], v["model2vec"]) for v in results["versus_model2vec"]] == \
        [(p["name"], m["name"]) for m in m2vs for p in picks_of(results)]
    for v in results["versus_model2vec"]:
        pick = next(e for e in results["entries"] if e["name"] == v["pick"])
        m2v = next(e for e in m2vs if e["name"] == v["model2vec"])
        assert set(v["difference"]) == set(m2v["metrics"])
        for task, d in v["difference"].items():
            assert d["value"] == pytest.approx(pick["metrics"][task]["value"] - m2v["metrics"][task]["value"])
            assert d["n"] == pick["metrics"][task]["n"]
            assert d["ci95"] is None or d["ci95"][0] <= d["value"] <= d["ci95"][1]
            assert d["beats"] == (d["ci95"] is not None and d["ci95"][0] > 0)
            assert d["e2e_p95_ms"] == {"edgekit": pick["latency_ms"][e2e_shape(task)]["p95"],
                                       "model2vec": m2v["latency_ms"][e2e_shape(task)]["p95"]}
        assert v["beats"] == all(d["beats"] for d in v["difference"].values())


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
        pick = v["pick"] + (" (best static)" if v["best_static"] else "")
        assert any(line.startswith(f"| {pick} | {v['model2vec']} |") and
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
        panels = 1 if entry.get("variant") == "classifier" else 2  # a classifier answers its own task only
        assert svg.count(entry["name"].removeprefix("edgekit ")) >= panels, entry["name"]


def test_the_saved_json_leaves_the_per_example_outcomes_out(quick_bench):
    # setup
    saved = json.loads(quick_bench.path.read_text())
    # assert: kept in memory for the paired intervals, not written (thousands of numbers per entry)
    assert all("outcomes" in e for e in quick_bench.results["entries"])
    assert not any("outcomes" in e for e in saved["entries"])


def test_quick_mode_drops_the_quality_floor_so_its_one_epoch_student_is_still_picked():
    # setup: the default recipe asks 97% of the teacher on every task
    from bench.compare import RECIPE
    from edgekit.stages.loading import load_recipe

    recipe = load_recipe(RECIPE)
    # execute
    quick = quick_recipe(recipe)
    # assert
    assert recipe.budget.min_retention == 97 and quick.budget.min_retention is None


# model2vec trained on the run's data: fitted to the teacher's embeddings, and a classifier per classification task

def _pairwise_cosines(vectors):
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = unit @ unit.T
    return cosines[np.triu_indices(len(vectors), k=1)]


def test_the_fitted_model2vec_is_closer_to_the_teacher_than_the_distilled_one_on_its_training_texts(quick_bench):
    # setup: the texts edgekit distills on and the teacher's embeddings of them (from edgekit's cache)
    if not M2V_TRAIN:
        pytest.skip("model2vec.train is not importable (it needs `datasets`)")
    from scipy.stats import pearsonr

    from bench.model2vec_row import Model2VecRunner
    from edgekit.stages.distill.stage import distillation_set
    from edgekit.stages.loading import load_tasks
    from edgekit.stages.teacher import prepare_teacher
    from edgekit.trust.cache import Cache

    recipe, results, _, root = quick_bench
    tasks = load_tasks(recipe)
    cache = Cache(root / "cache", print)
    teacher = prepare_teacher(recipe, tasks, cache, print)
    inputs, _, digest = distillation_set(recipe, tasks, teacher)
    target = teacher.outputs(inputs, digest, cache)["embedding"][:200]  # (texts, hidden)
    texts = inputs.texts[:200]
    (distilled,), (fitted,) = model2vec_of(results), model2vec_of(results, "fitted")
    # execute: how well each one's cosines between the training texts follow the teacher's (their dims differ)
    agreement = {e["name"]: pearsonr(_pairwise_cosines(Model2VecRunner(Path(results["root"]) / e["file"], [])
                                                       .encode(texts)), _pairwise_cosines(target)).statistic
                 for e in (distilled, fitted)}
    # assert: fitted on the distillation set's teacher vectors, as many texts as edgekit's students learn from,
    # its linear head kept (folded into its vectors: the teacher's 32 wide, from the distilled 16), and said so
    assert fitted["fitted_on"] == len(inputs) and distilled["dim"] == 16 and fitted["dim"] == target.shape[1] == 32
    assert "n_layers=0" in results["model2vec"]["fitted_by"] and "folded" in results["model2vec"]["fitted_by"]
    assert agreement[fitted["name"]] > agreement[distilled["name"]] + 0.05, agreement


class Classifier(NamedTuple):
    results: dict  # the module's comparison
    entry: dict  # its model2vec classifier entry
    folder: Path  # the classifier's saved pipeline
    sentiment: TaskData  # the one task it answers


@pytest.fixture
def m2v_classifier(quick_bench):
    """model2vec's classifier in the module's comparison, and the one task it was trained on (sentiment)."""
    if not M2V_TRAIN:
        pytest.skip("model2vec.train is not importable (it needs `datasets`)")
    from edgekit.stages.loading import load_tasks

    results = quick_bench.results
    (clf,) = model2vec_of(results, "classifier")
    sentiment = next(t for t in load_tasks(quick_bench.recipe) if t.name == "sentiment")
    return Classifier(results, clf, Path(results["root"]) / clf["file"], sentiment)


def test_the_model2vec_classifier_answers_its_own_task_with_its_own_predictions(m2v_classifier):
    # setup
    from model2vec.inference import StaticModelPipeline

    results, clf, folder, sentiment = m2v_classifier
    pipeline = StaticModelPipeline.from_pretrained(folder)
    # execute
    predicted = np.asarray([int(c) for c in pipeline.predict(list(sentiment.test["text"]))])
    # assert: scored on sentiment only, with the predictions of its own pipeline (its head, not a refitted one)
    assert clf["task"] == "sentiment" and set(clf["metrics"]) == set(clf["retention"]) == {"sentiment"}
    assert clf["fitted_on"] == len(sentiment.train["text"])
    assert clf["metrics"]["sentiment"]["value"] == pytest.approx(float(np.mean(predicted == sentiment.test["label"])))
    # compared on sentiment only, and shown as not applicable to the similarity task
    rows = [v for v in results["versus_model2vec"] if v["model2vec"] == clf["name"]]
    assert rows and all(set(v["difference"]) == {"sentiment"} for v in rows)
    line = next(line for line in markdown(results).splitlines() if line.startswith(f"| {clf['name']} |"))
    assert line.count("—") == 3  # its pairs metric, its pairs lengths and its pairs end to end


def test_the_model2vec_classifier_is_its_pipelines_predict_proba_as_logits(m2v_classifier):
    # setup
    from bench.model2vec_row import Model2VecClassifierRunner

    _, _, folder, sentiment = m2v_classifier
    runner = Model2VecClassifierRunner(folder, sentiment)
    text = sentiment.test["text"][0]
    # execute
    out = runner.text_outputs(text)
    alone = runner.run({"input_ids": np.array(runner.pipeline.model.tokenize([text]), dtype=np.int64)})
    # assert: one task's logits, ordered by label id; the model alone gives the same probabilities
    proba = runner.pipeline.predict_proba([text])[0]
    assert set(out) == {"sentiment_logits"} and runner.applies("sentiment") and not runner.applies("pairs")
    np.testing.assert_allclose(np.exp(out["sentiment_logits"][runner.columns]), proba, rtol=1e-5)
    np.testing.assert_allclose(alone[0], proba, atol=2e-3)


# which edgekit files are compared: a distill-and-export run's pick, the run's best static file

def _row(name, student, retention, static=None, pareto=False):
    return {"name": name, "student": student, "provider": "cpu", "onnx": f"candidates/{name}.onnx",
            "retention": retention, "pareto": pareto, "metrics": {t: {"value": 0.5} for t in retention},
            "architecture": {"static": static} if static else {"layers": 3}}


def test_the_best_static_file_keeps_the_most_of_the_teacher_on_its_worst_task():
    # setup: S256 better on average, S64 better on its worst task; a transformer student better than both
    report = {"files": [_row("L3-fp32", "L3", {"a": 99.0, "b": 99.0}),
                        _row("S256-fp32", "S256", {"a": 110.0, "b": 90.0}, static=256),
                        _row("S64-int8", "S64", {"a": 95.0, "b": 94.0}, static=64)]}
    # execute / assert
    assert best_static(report, "cpu")["name"] == "S64-int8"
    assert best_static(report, "cuda") is None and best_static({"files": report["files"][:1]}, "cpu") is None


def test_a_distill_and_export_runs_pick_and_best_static_file_are_compared(tmp_path):
    # setup: a run made by `edgekit distill-and-export` (no sweep): its one budget and its CPU pick
    from bench.compare import _picks

    report = {"sweep": None, "picks": {"cpu": "L3-int8"},
              "budget": {"label": "x3", "ms": 11.8, "speedup": 3.0},
              "files": [_row("L3-int8", "L3", {"a": 99.0}, pareto=True),
                        _row("S256-fp32", "S256", {"a": 98.0}, static=256, pareto=True),
                        _row("S64-fp32", "S64", {"a": 97.0}, static=64)]}
    # execute
    points = sweep_points(report)
    picks = _picks(report, tmp_path)
    # assert
    assert points == [{"budget": "x3", "ms": 11.8, "speedup": 3.0, "provider": "cpu", "pick": "L3-int8"}]
    assert [(p["name"], p["budgets"], bool(p.get("best_static"))) for p in picks] == \
        [("edgekit L3-int8", ["x3 = 11.8 ms"], False), ("edgekit S256-fp32", [], True)]


def _static_model_on(tokenizer_folder, dim, seed=0):
    """A model2vec StaticModel with random vectors on a tokenizer.json's vocabulary (what `distill` saves, minus
    the teacher: the fold does not depend on where the vectors came from)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_folder) / "tokenizer.json"))
    vectors = np.random.default_rng(seed).normal(size=(tokenizer.get_vocab_size(), dim)).astype(np.float32)
    return StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True)


# Short texts (under max_length tokens, where model2vec's two tokenizations agree), and one with characters outside
# the tiny vocabulary: both sides drop its [UNK]s.
FOLD_TEXTS = ["a good film", "the movie was bad and slow", "good good good", "bad", "an ok film ☃ ✓ 漢字",
              "the plot was good but the acting was bad"]


@pytest.mark.parametrize("trained_weights", [False, True])
def test_the_fitted_linear_head_folds_exactly_into_the_static_vectors(tiny_bert, trained_weights):
    # setup: the fitted row's model (n_layers=0: one nn.Linear, 16 -> 32 wide, normalize=False) with a head that
    # is not the identity and a nonzero bias, and (once) token weights of its own, as fitting can learn them
    if not model2vec_train_available():
        pytest.skip("model2vec.train is not importable (it needs `datasets`)")
    import torch
    from model2vec.train import StaticModelForSimilarity

    from bench.model2vec_row import FITTED_CONFIG, fold_linear_head

    static = _static_model_on(tiny_bert, 16)
    model = StaticModelForSimilarity.from_static_model(
        model=static, n_layers=FITTED_CONFIG["n_layers"], normalize=FITTED_CONFIG["normalize"], out_dim=32,
        freeze_weights=False if trained_weights else None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        (linear,) = model.head
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator))
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))
        if trained_weights:
            model.w.copy_(torch.rand(model.w.shape, generator=generator) + 0.5)
    model.eval()
    # execute
    folded = fold_linear_head(model)
    # assert: the same token ids on both sides ([UNK] dropped, nothing truncated), then the folded StaticModel's
    # encode is the fitted model's own encode, normalized
    assert folded.tokenize(FOLD_TEXTS) == model._tokenize_ids(FOLD_TEXTS)
    assert folded.unk_token_id in folded.tokenizer.encode(FOLD_TEXTS[4], add_special_tokens=False).ids  # dropped
    assert folded.max_length == model.max_length and folded.weights is None and folded.token_mapping is None
    expected = model.encode(FOLD_TEXTS)  # (texts, 32): head(mean), unnormalized
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    got = folded.encode(FOLD_TEXTS)
    assert got.shape == (len(FOLD_TEXTS), 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_fitted_row_is_fitted_with_a_linear_head_and_saved_as_its_fold(tiny_bert, tmp_path):
    # setup: a distilled-like model and teacher-like targets (32 wide) for a few texts
    if not model2vec_train_available():
        pytest.skip("model2vec.train is not importable (it needs `datasets`)")
    import torch
    from model2vec import StaticModel

    from bench.model2vec_row import fit_similarity, fitted

    folder = tmp_path / "distilled"
    _static_model_on(tiny_bert, 16).save_pretrained(folder)
    texts = [f"{a} {b} film {c}" for a in ("a", "the", "an") for b in ("good", "bad", "ok") for c in ("", "was", "is")]
    targets = np.random.default_rng(2).normal(size=(len(texts), 32)).astype(np.float32)
    # execute: the fit as the bench makes it, and the bench's saved (folded) row of the same fit
    model = fit_similarity(folder, texts, targets)
    saved = StaticModel.from_pretrained(fitted(folder, texts, targets, tmp_path / "work", print))
    # assert: a linear head, kept: the saved row encodes as the fitted model does (normalized)
    assert [type(layer) for layer in model.head] == [torch.nn.Linear] and not model.normalize
    expected = model.encode(FOLD_TEXTS)
    np.testing.assert_allclose(saved.encode(FOLD_TEXTS), expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-5)
