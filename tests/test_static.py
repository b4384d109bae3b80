"""Static-embedding students (students.static): their model2vec-style start, their vocabulary, and one
through the real pipeline on the tiny teacher."""

import json

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertTokenizerFast

from edgekit.data.inputs import TextInputs
from edgekit.errors import RecipeError
from edgekit.modeling.networks import StaticModel, TextModel, state_digest
from edgekit.modeling.static import pca, sif_weights, token_vectors, vocabulary, zipf_probability
from edgekit.pipeline import distill_and_export
from edgekit.stages.distill.trainer import TrainSettings, _groups
from edgekit.stages.select import to_train
from edgekit.stages.students import Candidate, build_static_student, candidates, static_candidates
from edgekit.stages.teacher import Teacher
from edgekit.testing import tiny_recipe, wordpiece_tokenizer
from edgekit.trust.cache import Cache

TEXTS = ["a good film", "the worst movie of the year", "funny and great", "a dull story, too long"]


@pytest.fixture(scope="module")
def teacher(tiny_bert):
    """The tiny BERT as a sentence-encoder teacher without heads (what a static student starts from)."""
    model = TextModel(AutoModel.from_pretrained(tiny_bert), "sentence-encoder", {}, "mean", True).eval()
    return Teacher(model, AutoTokenizer.from_pretrained(tiny_bert), str(tiny_bert), "", 64,
                   encoder_digest=state_digest(model))


def _ids(teacher, texts):
    return teacher.tokenizer(texts)["input_ids"]


# the start: PCA, SIF, the teacher's token pass

def test_pca_keeps_the_widest_directions_first_with_model2vecs_signs():
    # setup: 500 points whose spread along 4 axes is 10, 5, 1, 0.1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4)) * np.array([10.0, 5.0, 1.0, 0.1]) + 3.0
    # execute
    scores, components, mean = pca(x, 2)
    # assert: 2 orthonormal directions along the two widest axes, widest first, centred scores
    assert scores.shape == (500, 2) and components.shape == (2, 4)
    np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-9)
    np.testing.assert_allclose(np.abs(components[:, :2]), np.eye(2), atol=0.05)
    assert scores[:, 0].var() > scores[:, 1].var() > 10
    np.testing.assert_allclose(scores, (x - mean) @ components.T, atol=1e-9)
    assert all(scores[np.abs(scores[:, j]).argmax(), j] > 0 for j in range(2))  # model2vec's sign rule


def test_sif_weights_shrink_frequent_tokens_and_zipf_follows_the_vocabulary_order():
    # execute
    weights = sif_weights(np.array([0.05, 1e-4, 1e-6]))
    zipf = zipf_probability(1000)
    # assert
    assert weights[0] < 0.01 and weights[1] == pytest.approx(0.5) and weights[2] > 0.99
    assert zipf.sum() == pytest.approx(1.0) and np.all(np.diff(zipf) < 0)


def test_token_vectors_are_the_teachers_mean_over_cls_token_sep_and_are_cached(teacher, tmp_path):
    # setup
    cache = Cache(tmp_path)
    cls, sep = teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id
    good = teacher.tokenizer.convert_tokens_to_ids("good")
    with torch.no_grad():
        hidden = teacher.model.backbone(input_ids=torch.tensor([[cls, good, sep]])).last_hidden_state
    # execute
    first = token_vectors(teacher.model, teacher.tokenizer, np.array([good]), teacher.encoder_digest, cache)
    both = token_vectors(teacher.model, teacher.tokenizer, np.array([good + 1, good]), teacher.encoder_digest, cache)
    # assert
    np.testing.assert_allclose(first[0], hidden[0].mean(0).numpy(), atol=1e-6)
    np.testing.assert_array_equal(both[1], first[0])
    stored = next((tmp_path / "static-tokens").iterdir()) / "arrays.npz"
    assert sorted(np.load(stored)["ids"].tolist()) == [good, good + 1]  # memoized per token


# the vocabulary: pruned to the texts, the rest read [UNK]

def test_data_vocabulary_keeps_the_texts_tokens_and_the_special_ones_and_maps_the_rest_to_unk(teacher):
    # setup
    tokenizer = teacher.tokenizer
    size = len(tokenizer)
    # execute
    vocab = vocabulary(tokenizer, size, "data", _ids(teacher, TEXTS))
    # assert
    seen = {i for ids in _ids(teacher, TEXTS) for i in ids}
    assert set(vocab.kept.tolist()) == seen | set(tokenizer.all_special_ids)
    assert vocab.remap.dtype == np.int32 and vocab.size == size
    for token_id in range(size):
        row = vocab.remap[token_id]
        if token_id in vocab.kept:
            assert vocab.kept[row] == token_id
        else:
            assert vocab.kept[row] == tokenizer.unk_token_id
    hate = tokenizer.convert_tokens_to_ids("hate")  # not in TEXTS
    assert vocab.remap[hate] == vocab.unk_row


def test_full_vocabulary_keeps_every_token_but_berts_unused_placeholders(tmp_path):
    # setup
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "good", "film"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = wordpiece_tokenizer(BertTokenizerFast, tmp_path / "vocab.txt")
    # execute
    vocab = vocabulary(tokenizer, len(words), "full")
    # assert
    assert [words[i] for i in vocab.kept] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    assert vocab.remap[5] == vocab.remap[6] == vocab.unk_row == 1


def test_untrained_static_student_has_the_model2vec_models_similarities(teacher, tmp_path):
    # setup: model2vec's embedding of a text is the mean of its (special-token-free) tokens' PCA scores, each
    # times its SIF weight (Zipf probabilities over the token ids)
    vocab = vocabulary(teacher.tokenizer, len(teacher.tokenizer), "data", _ids(teacher, TEXTS))
    candidate = Candidate("S8", {"static": 8, "vocab": vocab.rows, "projection": 32})
    words = vocab.kept[~np.isin(vocab.kept, vocab.special)]
    vectors = token_vectors(teacher.model, teacher.tokenizer, words, teacher.encoder_digest, None)
    scores, _, _ = pca(vectors, 8)
    weights = sif_weights(zipf_probability(len(teacher.tokenizer))[words])
    rows = dict(zip(words.tolist(), scores * weights[:, None]))
    plain = teacher.tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    reference = np.stack([np.mean([rows[i] for i in ids], axis=0) for ids in plain])
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    # execute
    student, init = build_static_student(teacher, candidate, vocab, Cache(tmp_path))
    feed = teacher.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        embedding = student(feed["input_ids"], feed["attention_mask"])[0].numpy()
    # assert: the same cosine similarities (the projection maps PCA space isometrically into the teacher's)
    np.testing.assert_allclose(embedding @ embedding.T, reference @ reference.T, atol=1e-5)
    assert embedding.shape == (4, 32) and init["random"] == [] and 0 < init["explained_variance"] < 1
    special_rows = student.backbone.table.weight[torch.from_numpy(vocab.remap[vocab.special])]
    assert torch.count_nonzero(special_rows) == 0  # [CLS]/[SEP]/[UNK] start at zero


def test_static_candidates_are_named_by_width_and_refuse_one_wider_than_the_teacher(teacher, tiny_bert):
    # setup
    recipe = tiny_recipe(tiny_bert, students={"layers": [1], "static": [8, 16]})
    wide = tiny_recipe(tiny_bert, students={"layers": [1], "static": [64]})
    # execute
    found = static_candidates(recipe, teacher, _ids(teacher, TEXTS))
    # assert
    rows = vocabulary(teacher.tokenizer, len(teacher.tokenizer), "full").rows  # the default: every token
    shape = {"vocab": rows, "projection": 32, "mean_of": "text tokens"}
    assert [(c.name, c.arch) for c in found] == [("S16", {"static": 16, **shape}), ("S8", {"static": 8, **shape})]
    with pytest.raises(RecipeError, match="wider than the teacher's 32"):
        static_candidates(wide, teacher, _ids(teacher, TEXTS))


def test_static_students_can_be_the_only_ones_but_the_space_cannot_be_empty(teacher, tiny_bert):
    # setup
    only_static = tiny_recipe(tiny_bert, students={"layers": [], "static": [8]})
    empty = tiny_recipe(tiny_bert, students={"layers": []})
    inputs = TextInputs(teacher.tokenizer, TEXTS, 64)  # the distillation set's texts
    # execute / assert
    assert [c.name for c in candidates(only_static, teacher, inputs)] == ["S8"]
    with pytest.raises(RecipeError, match="the student space is empty"):
        candidates(empty, teacher, inputs)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"teacher": {"model": "x", "kind": "sequence-classifier", "head": "finetune"},
      "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
      "distill": {"losses": [{"name": "kl"}]}}, "this teacher is a sequence-classifier"),
    ({"distill": {"losses": [{"name": "mse"}, {"name": "hidden_mse"}]}}, "drop those losses or students.static"),
])
def test_recipes_that_static_students_cannot_serve_are_refused(tiny_bert, overrides, message):
    # execute / assert
    with pytest.raises(RecipeError, match=message):
        tiny_recipe(tiny_bert, students={"layers": [1], "static": [16]}, **overrides)


# training settings and which students are trained

def test_the_table_trains_without_weight_decay_and_the_rest_with_it():
    # setup
    model = StaticModel(torch.arange(10, dtype=torch.int32), 10, 4, 8)
    # execute
    groups = _groups(model, TrainSettings(1, 1, 1e-3, no_decay=("backbone.table.",)))
    # assert
    assert groups[1] == {"params": [model.backbone.table.weight], "weight_decay": 0.0}
    assert len(groups[0]["params"]) == 2  # the projection's weight and bias
    assert _groups(model, TrainSettings(1, 1, 1e-3)) == list(model.parameters())  # one group, as before


def test_every_feasible_static_candidate_is_trained_besides_max_students_transformers(tiny_bert):
    # setup: L1..L3 and S64/S16, all feasible at 10 ms but S64 (too slow, for the test's sake)
    from edgekit.recipe import Budget

    found = [Candidate(f"L{k}", {"layers": k}) for k in (1, 2, 3)]
    found += [Candidate("S64", {"static": 64}), Candidate("S16", {"static": 16})]
    ms = {"L1": 1, "L2": 2, "L3": 3, "S64": 20, "S16": 0.1}
    params = {"L1": 10, "L2": 20, "L3": 30, "S64": 40, "S16": 5}  # a static table can outweigh a transformer
    probes = {name: {"params": params[name], "variants": {"fp32": {"latency_ms": {"p95": ms[name]},
                                                                  "size_bytes": 1}}} for name in ms}
    # execute
    chosen = to_train(found, probes, [Budget(ms=10)], max_students=1)
    # assert
    assert [c.name for c in chosen] == ["L3", "S16"]


# one static student through the real pipeline

@pytest.fixture(scope="module")
def static_run(tiny_bert, warm_cache):
    cache = warm_cache("static")  # the finished tiny run's: its teacher and L1 student are this run's too
    recipe = tiny_recipe(tiny_bert, students={"layers": [1], "static": [16], "max_students": 1})
    report = distill_and_export(recipe, out=cache.parent / "run", cache_dir=cache, echo=print)
    return report, cache.parent / "run", recipe


def test_the_static_student_is_trained_besides_the_transformer_and_every_file_is_scored_and_timed(static_run):
    # setup
    report, run, recipe = static_run
    rows = {row["name"]: row for row in report.files if row["student"] == "S16"}
    history = json.loads((run / "candidates/S16/distillation.json").read_text())
    # assert
    assert {row["student"] for row in report.files} == {"teacher", "L1", "S16"}
    assert sorted(rows) == ["S16-fp32", "S16-int8-dynamic", "S16-int8-static-minmax"]
    for row in rows.values():
        assert set(row["metrics"]) == {"sentiment", "pairs"} and row["latency_ms"]["p95"] > 0
        assert row["architecture"]["static"] == 16 and row["architecture"]["projection"] == 32
        assert set(row["undistilled_metrics"]) == {"sentiment", "pairs"}
    n = len(history["loss_history"])
    assert n == recipe.distill.static_epochs  # its own epochs, not distill.epochs (1)
    assert history["loss_history"][-1]["loss"] < history["loss_history"][0]["loss"]


def test_the_static_file_gathers_rows_its_table_trained_and_int8_quantizes_the_table(static_run, teacher):
    # setup: the student as it started, rebuilt from the run's teacher and distillation texts
    from edgekit.stages.distill.stage import distillation_set
    from edgekit.stages.loading import load_tasks
    from edgekit.stages.students import build
    from edgekit.stages.teacher import prepare_teacher

    report, run, recipe = static_run
    tasks = load_tasks(recipe)
    prepared = prepare_teacher(recipe, tasks, Cache(run.parent / "cache"))
    inputs, _, _ = distillation_set(recipe, tasks, prepared)
    row = next(r for r in report.files if r["name"] == "S16-fp32")
    started, _ = build(Candidate("S16", row["architecture"]), recipe, prepared, tasks, inputs)
    folder = run / "candidates/S16"
    graph = onnx.load(str(folder / "model.onnx")).graph
    weights = {w.name: onnx.numpy_helper.to_array(w) for w in graph.initializer}
    int8 = onnx.load(str(folder / "model.int8-dynamic.onnx")).graph
    # assert: two Gathers (the remap, then the table) over the tokenizer's ids; the table trained although
    # freeze_embeddings is on (it is a transformer's word embeddings that stay frozen)
    remap, lookup = [n for n in graph.node if n.op_type == "Gather"][:2]
    assert remap.input[1] == "input_ids" and lookup.input[0] == "backbone.table.weight"
    assert weights[remap.input[0]].dtype == np.int32 and len(weights[remap.input[0]]) == len(teacher.tokenizer)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == len(teacher.tokenizer)
    table = weights["backbone.table.weight"]
    assert recipe.distill.freeze_embeddings and table.shape == (row["architecture"]["vocab"], 16)
    assert np.abs(table - started.backbone.table.weight.detach().numpy()).max() > 1e-3
    int8_table = next(w for w in int8.initializer if w.name == "backbone.table.weight_quantized")
    assert int8_table.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    for variant in ("int8-dynamic", "int8-static-minmax"):
        assert (folder / f"model.{variant}.onnx").stat().st_size < (folder / "model.onnx").stat().st_size


def test_the_static_file_matches_pytorch_on_real_inputs(static_run):
    # setup
    _, run, _ = static_run
    parity = json.loads((run / "candidates/S16/parity.json").read_text())
    # assert
    assert parity["samples"] == 32 and set(parity["outputs"]) == {"embedding", "sentiment_logits"}
    assert all(o["max_abs_diff"] <= parity["atol"] for o in parity["outputs"].values())
