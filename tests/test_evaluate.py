import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import f1_score
from torch import nn
from transformers import AutoTokenizer

from edgekit.data.tasks import TaskData
from edgekit.errors import DataError, UnknownTask
from edgekit.recipe import DataSpec, TaskSpec
from edgekit.runtime.evaluate import evaluate_onnx

MAX_LENGTH = 64
SENTENCES = ["a funny film", "the worst story of the year, too long and too dull for anyone", "best movie",
             "it is not good but it is not bad either", "love it", "a boring, boring film about nothing at all",
             "great", "what a story: the film has its moments, but the end is a mess"]
OTHERS = ["dull", "one of the best films this year", "bad acting and a worse script", "a great and funny story",
          "not for me", "he and she love the film", "an awful mess", "so good"]


class BagOfWords(nn.Module):
    """Mean-pooled embedding table + linear head: the outputs of an edgekit text graph."""

    def __init__(self, vocab: int, dim: int = 8, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled, self.head(pooled)


def _export(module, example: tuple, names: list[str], path, dynamic: bool):
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes.update({"embedding": {0: "batch"}, "sentiment_logits": {0: "batch"}})
    torch.onnx.export(module, example, str(path), dynamo=False, input_names=names,
                      output_names=["embedding", "sentiment_logits"], dynamic_axes=axes if dynamic else None)
    return path


@pytest.fixture(scope="module")
def text_model(tiny_bert, tmp_path_factory):
    """(onnx path, tokenizer, torch module) of a dynamic-axes text graph."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    module = BagOfWords(tokenizer.vocab_size).eval()
    example = (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    path = _export(module, example, ["input_ids", "attention_mask"], tmp_path_factory.mktemp("bow") / "m.onnx", True)
    return path, tokenizer, module


def _reference(module, tokenizer, texts, max_length=MAX_LENGTH):
    """PyTorch outputs text by text, unpadded: (embeddings, logits) as float64 numpy arrays."""
    outputs = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            outputs.append([o.numpy()[0] for o in module(enc["input_ids"], enc["attention_mask"])])
    return tuple(np.array([o[i] for o in outputs], dtype=np.float64) for i in range(2))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _task(name, kind, test, metric=None):
    return TaskData(spec=TaskSpec(name=name, kind=kind, data=DataSpec(source="unused.csv"), metric=metric),
                    train={}, test=test)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_classification_scores_argmax_against_labels(text_model, metric):
    # setup: gold = the model's own prediction with two examples flipped
    path, tokenizer, module = text_model
    _, logits = _reference(module, tokenizer, SENTENCES)
    gold = logits.argmax(1)
    gold[[1, 4]] = (gold[[1, 4]] + 1) % 3
    task = _task("sentiment", "classification", {"text": SENTENCES, "label": gold}, metric)
    # execute: batches of 3 so sorting by length and restoring the order matter
    result = evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1, batch_size=3)["sentiment"]
    # assert
    expected = {"accuracy": 6 / 8, "macro_f1": f1_score(gold, logits.argmax(1), average="macro")}[metric]
    assert result["metric"] == metric and result["n"] == 8
    assert result["value"] == pytest.approx(expected)
    assert result["ci95"][0] <= result["value"] <= result["ci95"][1]
    assert result["predictions"]["pred"] == logits.argmax(1).tolist()
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(result["predictions"]["confidence"], probs.max(1), atol=1e-5)


def test_similarity_scores_cosine_of_pairs(text_model):
    # setup
    path, tokenizer, module = text_model
    score = np.random.default_rng(0).uniform(0, 5, len(SENTENCES))
    task = _task("sts", "similarity", {"text_a": SENTENCES, "text_b": OTHERS, "score": score})
    emb_a, _ = _reference(module, tokenizer, SENTENCES)
    emb_b, _ = _reference(module, tokenizer, OTHERS)
    cosine = (_unit(emb_a) * _unit(emb_b)).sum(1)
    # execute
    result = evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1, batch_size=4)["sts"]
    # assert
    assert result["metric"] == "spearman" and result["n"] == 8
    assert result["value"] == pytest.approx(spearmanr(cosine, score).statistic)
    np.testing.assert_allclose(result["predictions"]["cosine"], cosine, atol=1e-5)


@pytest.mark.parametrize("metric", ["mrr", "recall@1"])
def test_retrieval_ranks_each_query_against_every_document(text_model, metric):
    # setup
    path, tokenizer, module = text_model
    task = _task("search", "retrieval", {"query": SENTENCES, "document": OTHERS}, metric)
    queries, _ = _reference(module, tokenizer, SENTENCES)
    documents, _ = _reference(module, tokenizer, OTHERS)
    similarity = _unit(queries) @ _unit(documents).T
    rank = (similarity >= np.diag(similarity)[:, None]).sum(1)  # ties count against the model
    # execute
    result = evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1, batch_size=5)["search"]
    # assert
    expected = {"mrr": np.mean(1 / rank), "recall@1": np.mean(rank == 1)}[metric]
    assert result["metric"] == metric and result["n"] == 8
    assert result["value"] == pytest.approx(expected)
    assert result["predictions"]["gold_rank"] == rank.tolist()


def test_missing_output_names_the_outputs_the_graph_has(text_model):
    # setup
    path, tokenizer, _ = text_model
    task = _task("topic", "classification", {"text": SENTENCES, "label": np.zeros(8, dtype=np.int64)})
    # execute / assert
    with pytest.raises(UnknownTask, match="topic_logits.*embedding, sentiment_logits"):
        evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1)


def test_labels_beyond_the_graphs_classes_are_a_data_error(text_model):
    # setup: the head has 3 classes
    path, tokenizer, _ = text_model
    task = _task("sentiment", "classification", {"text": SENTENCES, "label": np.full(8, 5, dtype=np.int64)})
    # execute / assert
    with pytest.raises(DataError, match="3 classes"):
        evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1)


def test_static_shape_graph_is_padded_to_its_batch_and_length(text_model, tmp_path):
    # setup: the same module exported for batch 2, 16 tokens
    _, tokenizer, module = text_model
    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    path = _export(module, example, ["input_ids", "attention_mask"], tmp_path / "static.onnx", dynamic=False)
    texts = SENTENCES[:5]
    _, logits = _reference(module, tokenizer, texts, max_length=16)
    task = _task("sentiment", "classification", {"text": texts, "label": logits.argmax(1)})
    # execute
    result = evaluate_onnx(path, [task], tokenizer, MAX_LENGTH, threads=1)["sentiment"]
    # assert
    assert result["value"] == 1.0 and result["n"] == 5


def test_image_classification_feeds_pixel_values(tmp_path):
    # setup
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path / "image.onnx"
    torch.onnx.export(module, (torch.zeros(1, 1, 4, 4),), str(path), dynamo=False, input_names=["pixel_values"],
                      output_names=["digits_logits"], dynamic_axes={"pixel_values": {0: "batch"}})
    images = np.random.default_rng(0).normal(size=(10, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        pred = module(torch.from_numpy(images)).numpy().argmax(1)
    gold = pred.copy()
    gold[:3] = (gold[:3] + 1) % 4
    task = _task("digits", "image-classification", {"image": images, "label": gold})
    # execute
    result = evaluate_onnx(path, [task], None, MAX_LENGTH, threads=1, batch_size=4)["digits"]
    # assert
    assert result["value"] == pytest.approx(0.7)
    assert result["predictions"]["pred"] == pred.tolist()
