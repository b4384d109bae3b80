import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit import names
from edgekit.data import builtin
from edgekit.data.kinds import KINDS, TASK_KINDS, TaskKind, kind_of
from edgekit.data.tasks import BUILTIN_KIND
from edgekit.errors import UnknownTask
from edgekit.recipe import METRICS

COLUMNS = {"text": ["a b", "c"], "text_a": ["a b", "c"], "text_b": ["d", "e f g"], "query": ["q q", "r"],
           "document": ["x", "y"], "image": np.zeros((2, 1, 2, 2), np.float32)}


def _lengths(texts):
    return np.array([len(t.split()) for t in texts])


def test_the_registry_holds_every_kind_a_recipe_names_in_order():
    # assert: the kinds recipes validate against, each under its own name
    assert TASK_KINDS == tuple(KINDS) == ("classification", "similarity", "retrieval", "image-classification")
    assert all(isinstance(kind, TaskKind) and kind_of(name) is kind and kind.name == name
               for name, kind in KINDS.items())
    assert METRICS == {name: kind.metrics for name, kind in KINDS.items()}
    assert [kind_of(name).metrics[0] for name in TASK_KINDS] == ["accuracy", "spearman", "mrr", "accuracy"]


def test_an_unknown_kind_names_the_known_ones():
    # execute / assert
    with pytest.raises(UnknownTask) as error:
        kind_of("regression")
    assert "'regression'" in str(error.value) and all(name in str(error.value) for name in TASK_KINDS)


def test_what_each_kind_declares():
    # setup
    classification, similarity, retrieval, image = (kind_of(name) for name in TASK_KINDS)
    # assert
    assert [k.columns for k in (classification, similarity, retrieval, image)] == [
        ("text", "label"), ("text_a", "text_b", "score"), ("query", "document"), ("image", "label")]
    assert [k.text_columns for k in (classification, similarity, retrieval, image)] == [
        ("text",), ("text_a", "text_b"), ("query", "document"), ()]
    assert [k.labelled for k in (classification, similarity, retrieval, image)] == [True, False, False, True]
    assert [k.images for k in (classification, similarity, retrieval, image)] == [False, False, False, True]
    assert classification.output("sentiment") == image.output("sentiment") == names.logits_name("sentiment")
    assert similarity.output("sts") == retrieval.output("search") == names.EMBEDDING


def test_length_texts_and_example_lengths():
    # setup
    classification, similarity, retrieval, image = (kind_of(name) for name in TASK_KINDS)
    # assert: the texts whose token lengths stand for the inputs, and one length per example (pairs: the longer)
    assert classification.length_texts(COLUMNS) == ["a b", "c"]
    assert similarity.length_texts(COLUMNS) == ["a b", "c"]
    assert retrieval.length_texts(COLUMNS) == ["q q", "r"]
    assert image.length_texts(COLUMNS) == []
    assert classification.example_lengths(COLUMNS, _lengths).tolist() == [2, 1]
    assert similarity.example_lengths(COLUMNS, _lengths).tolist() == [2, 3]
    assert retrieval.example_lengths(COLUMNS, _lengths).tolist() == [2, 1]
    assert image.example_lengths(COLUMNS, _lengths) is None


def test_every_builtin_serves_at_most_one_kind():
    # assert: the built-ins of the kinds exist, and the rest are unlabeled texts
    served = [name for kind in KINDS.values() for name in kind.builtins]
    assert len(served) == len(set(served)) and set(served) <= set(builtin.BUILTIN_NAMES)
    assert BUILTIN_KIND == {"rotten_tomatoes": "classification", "rotten_tomatoes_plots": None, "lee": "similarity",
                            "lee_background": None, "digits": "image-classification"}


def test_the_registry_imports_nothing_heavy():
    # setup: a fresh interpreter (recipe validation and `edgekit --help` import the registry)
    script = ("import json, sys, edgekit.data.kinds, edgekit.recipe; "
              "print(json.dumps([m for m in ('numpy', 'torch', 'onnxruntime', 'transformers', 'scipy') "
              "if m in sys.modules]))")
    # execute
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    # assert
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
