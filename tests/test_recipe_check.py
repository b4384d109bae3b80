"""Issue 28, a user's own data: `edgekit recipe check` and the start of a run refuse what the teacher cannot take
(more tokens than its position table holds, in every family and in a sentence-transformers folder; images of
another size), the run log's truncation note says a fix that works, and the check lists every problem of a recipe
in one go, each at its file:line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekit.data.tasks import load_task_data, truncation_note
from edgekit.errors import DataError, InvalidModelFile, RecipeError, TeacherError
from edgekit.modeling.models import load_hf, load_tokenizer, position_limit, resolve_model, token_limit
from edgekit.modeling.networks import TextModel
from edgekit.recipe import DataSpec, TaskSpec
from edgekit.stages.loading import check_recipe, load_recipe, load_tasks, recipe_from_dict, truncation
from edgekit.stages.teacher import Teacher, prepare_teacher
from edgekit.testing import TINY_FAMILIES, tiny_cnn, tiny_family_model, tiny_text_model, tiny_vit

NO_LIMIT = 1000000000000000019884624838656  # transformers' VERY_LARGE_INTEGER: the tokenizer sets no limit


def _say_no_limit(folder: Path) -> Path:
    """The tokenizer's model_max_length as many sentence-transformers folders save it: the no-limit sentinel."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": NO_LIMIT}))
    return folder


def _issue_teacher(folder: Path, max_seq_length: int = 100) -> Path:
    """The issue's teacher in miniature: an MPNet sentence-transformers folder whose tokenizer sets no limit and
    whose sentence_bert_config.json says max_seq_length; its 130-row position table takes 128 tokens (MPNet numbers
    positions from padding_idx + 1, as the real one's 514 rows take 512)."""
    _say_no_limit(tiny_family_model(folder, "mpnet", layers=1))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def _recipe_file(tmp_path: Path, teacher: Path, text: str = "", **teacher_keys) -> Path:
    """A YAML recipe on `teacher` (its keys added to the teacher's), Rotten Tomatoes snippets as the task; `text`
    appended as it is."""
    data = {"name": "mine",
            "teacher": {"model": str(teacher), "kind": "sentence-encoder", "head": "linear", **teacher_keys},
            "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"},
                       "split": {"max_train": 60, "max_test": 30}}],
            "students": {"layers": [1], "max_students": 1}, "budget": {"ms": 1000}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) + text)
    return path


def _line(path: Path, text: str) -> int:
    """The 1-based line of `path` where `text` first appears."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _runs(model, tokens: int) -> bool:
    """Whether a Hugging Face encoder runs on one input of `tokens` tokens (no padding among them)."""
    ids = torch.full((1, tokens), 5)
    try:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except (RuntimeError, IndexError):
        return False
    return True


# --- the token limit ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_limit_read_from_the_files_is_what_each_family_takes(family, tmp_path):
    # setup: a tokenizer that sets no limit, so the position table alone says
    from transformers import AutoModel

    folder = _say_no_limit(tiny_family_model(tmp_path / family, family, layers=1))
    model = AutoModel.from_pretrained(folder).eval()
    # execute
    limit = token_limit(resolve_model(str(folder)))
    # assert: the model runs at the limit and, where it has a table to overflow, fails one token past it (DeBERTa
    # adds no absolute positions: no limit; ModernBERT's rotary positions compute past its trained 128)
    assert _runs(model, limit or 300)
    if limit is not None and family != "modernbert":
        assert not _runs(model, limit + 1)


@pytest.mark.parametrize(("config", "expected"), [
    ({"model_type": "bert", "max_position_embeddings": 512}, 512),
    # relative positions index a table of the same length: it used to go unchecked
    ({"model_type": "bert", "max_position_embeddings": 512, "position_embedding_type": "relative_key"}, 512),
    ({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "data2vec-text", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, None),
    ({"model_type": "bert"}, None),
])
def test_position_limits_of_configs(config, expected):
    # execute / assert
    assert position_limit(config) == expected


def test_the_issues_max_length_is_refused_by_the_check_and_before_any_work(run_cli, tmp_path, monkeypatch):
    # setup: the issue's recipe: teacher.max_length 1024 on a teacher that takes 128 tokens
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=1024)
    loaded = []
    monkeypatch.setattr("edgekit.stages.loading.load_tasks", loaded.append)
    # execute
    checked = run_cli("recipe", "check", path)
    ran = run_cli("distill-and-export", path, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    # assert: the file:line of max_length, the teacher's limit and the fix, one message; no data read, nothing written
    expected = (f"{path}:{_line(path, 'max_length: 1024')}: teacher.max_length: teacher.max_length 1024 is more than the "
                "128 tokens teacher")
    for result in (checked, ran):
        assert result.exit_code == 1, result.output
        assert expected in result.output and "set teacher.max_length to at most 128" in result.output
        assert "Traceback" not in result.output
    assert not loaded and not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("max_seq_length", "expected"), [(100, 100), (1024, 128)])
def test_a_max_length_read_from_the_folder_is_never_more_than_the_teacher_takes(max_seq_length, expected, tmp_path):
    # setup: the recipe leaves max_length out; the folder's max_seq_length is below, or past, its table
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet", max_seq_length))
    # execute
    recipe = load_recipe(path)
    # assert: the folder's, capped at the teacher's limit, and the check passes
    assert recipe.teacher.max_length == expected
    check_recipe(recipe)


def test_a_limit_known_only_once_loaded_stops_the_teacher_stage_before_it_reads_data(tmp_path, monkeypatch):
    # setup: as for a hub id, the check cannot read the teacher's limit from files
    recipe = load_recipe(_recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=1024))
    monkeypatch.setattr("edgekit.modeling.models.token_limit", lambda source: None)
    check_recipe(recipe)
    # execute / assert: refused with the limit its loaded config and tokenizer give (no tasks, no cache needed)
    with pytest.raises(TeacherError, match=r"recipe.yaml:\d+: teacher.max_length 1024 is more than the 128 tokens"):
        prepare_teacher(recipe, [], None)


def test_a_position_table_edgekit_misreads_fails_with_the_fix_not_a_raw_shape_error(tmp_path, monkeypatch):
    # setup: as for a family whose table edgekit cannot read, no limit is known at all
    recipe = load_recipe(_recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=1024))
    monkeypatch.setattr("edgekit.modeling.models.position_limit", lambda config: None)
    check_recipe(recipe)
    # execute / assert: one input of max_length tokens is run first; its failure names the length and the fix
    with pytest.raises(TeacherError, match=r"fails on an input of 1024 tokens.*IndexError.*max_position_embeddings"):
        prepare_teacher(recipe, [], None)


# --- the truncation note -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_length", "limit", "fix"), [
    (64, 128, "raise teacher.max_length, up to the 128 tokens the teacher takes, to keep more"),
    (128, 128, ("the teacher takes at most 128 tokens: to keep more, split long texts (e.g. into passages) or use "
                "a teacher with a longer context")),
    (64, None, "raise teacher.max_length to keep more"),
])
def test_the_truncation_note_says_a_fix_that_works(max_length, limit, fix):
    # execute
    note = truncation_note({"max_length": max_length, "train": 2, "test": 1}, limit)
    # assert
    assert note == (f"2 train / 1 test example(s) have a text longer than teacher.max_length {max_length} tokens, "
                    f"cut to it ({fix})")


def test_the_run_log_at_the_teachers_limit_does_not_say_raise_it(tmp_path):
    # setup: a teacher that takes 128 tokens, run at 128, on texts longer than that
    folder = tiny_text_model(tmp_path / "bert")
    teacher = Teacher(TextModel(load_hf(resolve_model(str(folder)), "AutoModel"), "sentence-encoder"),
                      load_tokenizer(str(folder)), str(folder), "", 128)
    rows = [f"{i},{'good film ' * 80}{i},{'fresh' if i % 2 else 'rotten'}" for i in range(20)]
    (tmp_path / "long.csv").write_text("id,text,label\n" + "\n".join(rows) + "\n")
    task = load_task_data(TaskSpec(name="long", kind="classification", data=DataSpec(source=str(tmp_path / "long.csv"))))
    said = []
    # execute
    truncation([task], teacher, said.append)
    # assert
    assert teacher.token_limit == 128
    assert len(said) == 1 and "the teacher takes at most 128 tokens" in said[0] and "raise" not in said[0]


# --- image teachers ------------------------------------------------------------------------------------------------


def _images(path: Path, shape: tuple) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, shape, dtype=np.uint8), labels=np.arange(shape[0]) % 10)
    return path


def _image_recipe(teacher: Path, source: Path, head: str = "finetune"):
    return recipe_from_dict({
        "name": "pictures", "teacher": {"model": str(teacher), "kind": "image-classifier", "head": head},
        "tasks": [{"name": "pictures", "kind": "image-classification", "data": {"source": str(source)}}],
        "budget": {"ms": 1000}})


def test_images_the_vit_does_not_take_are_refused_by_the_check_with_the_run_time_message(tmp_path):
    # setup: a 16x16 RGB ViT; 8x8 grey images, and 16x16 RGB ones stored channels-last
    vit = tiny_vit(tmp_path / "vit")
    grey = _image_recipe(vit, _images(tmp_path / "grey.npz", (40, 8, 8)))
    rgb = _image_recipe(vit, _images(tmp_path / "rgb.npz", (40, 16, 16, 3)))
    # execute: the check (from config.json and the file's headers), and the teacher stage (once loaded)
    with pytest.raises(RecipeError) as checked:
        check_recipe(grey)
    with pytest.raises(DataError) as loaded:
        prepare_teacher(grey, load_tasks(grey), None)
    check_recipe(rgb)
    # assert: one message, at the task's data source; the images that fit pass
    assert "(1, 8, 8)" in str(loaded.value) and "(3, 16, 16)" in str(loaded.value) and "Fix:" in str(loaded.value)
    assert f"recipe: tasks[0].data.source: {loaded.value}" in str(checked.value)


def test_a_torch_module_teacher_that_cannot_take_the_images_fails_before_any_work_naming_them(tmp_path):
    # setup: a CNN for grey images; RGB images (its input is known only once it is loaded)
    cnn = tiny_cnn(tmp_path / "cnn.pt", in_channels=1)
    recipe = _image_recipe(cnn, _images(tmp_path / "rgb.npz", (40, 8, 8, 3)), head="none")
    check_recipe(recipe)
    # execute / assert: a DataError naming the shape, not a raw convolution error
    with pytest.raises(DataError, match=r"\(C, H, W\) = \(3, 8, 8\), and teacher .* fails on them \(RuntimeError"):
        prepare_teacher(recipe, load_tasks(recipe), None)


# --- every problem in one go ---------------------------------------------------------------------------------------


def test_recipe_check_lists_a_schema_error_with_the_file_teacher_provider_and_key_problems(run_cli, tmp_path):
    # setup: an unknown key, a teacher.max_length past the teacher's limit, a missing data file and test file, an
    # unknown provider, a missing signing key
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=1024, colour="blue")
    text = path.read_text().replace("source: rotten_tomatoes", "source: missing.csv").replace(
        "max_test: 30", "max_test: 30\n    test_file: nothere.csv").replace(
        "ms: 1000", "ms: 1000\n  providers: [cpu, bogus]")
    path.write_text(text + "signing:\n  key: no-such-key.pem\n")
    # execute
    result = run_cli("recipe", "check", path)
    # assert: all six, each at its line, counted
    assert result.exit_code == 1 and "6 problem(s)" in result.output, result.output
    for key, line in [("teacher.colour: unknown key", "colour: blue"),
                      ("teacher.max_length: teacher.max_length 1024", "max_length: 1024"),
                      ("tasks.0.data.source: file 'missing.csv'", "source: missing.csv"),
                      ("tasks.0.split.test_file: file 'nothere.csv'", "test_file: nothere.csv"),
                      ("budget.providers.1: unknown execution provider 'bogus'", "providers: [cpu, bogus]"),
                      ("signing.key: private key file 'no-such-key.pem'", "key: no-such-key.pem")]:
        assert f"{path}:{_line(path, line)}: {key}" in result.output
    assert "Traceback" not in result.output


def test_recipe_check_lists_a_bad_profile_with_the_rest(run_cli, tmp_path):
    # setup: a target profile that does not exist, and a missing data file
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), "target: no-such-profile\n")
    path.write_text(path.read_text().replace("source: rotten_tomatoes", "source: missing.csv"))
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 1 and "2 problem(s)" in result.output, result.output
    assert f"{path}:{_line(path, 'target: no-such-profile')}: " in result.output and "no-such-profile" in result.output
    assert "file 'missing.csv' does not exist" in result.output


def test_recipe_check_lists_bad_rows_with_the_teachers_problems(run_cli, tmp_path):
    # setup: a file with an empty text (bad_rows: error) and a teacher.max_length past the teacher's limit
    rows = "\n".join(f"a {'good' if i % 2 else 'bad'} film number {i},{'fresh' if i % 2 else 'rotten'}"
                     for i in range(20))
    (tmp_path / "mine.csv").write_text(f"text,label\n{rows}\n,fresh\n")
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=1024)
    path.write_text(path.read_text().replace("source: rotten_tomatoes",
                                             f"source: {tmp_path / 'mine.csv'}\n    bad_rows: error"))
    # execute
    result = run_cli("recipe", "check", path)
    # assert: both, in one message
    assert result.exit_code == 1 and "2 problem(s)" in result.output, result.output
    assert "teacher.max_length: teacher.max_length 1024" in result.output
    assert f"{path}:{_line(path, 'data:')}: tasks[0].data: " in result.output and "empty" in result.output


def test_a_check_that_cannot_finish_is_one_problem_not_the_end_of_the_others(tmp_path, monkeypatch):
    # setup: the token limit's files cannot be read; the data file is missing too
    def unreadable(spec):
        raise InvalidModelFile("tokenizer_config.json cannot be read")

    monkeypatch.setattr("edgekit.modeling.models.length_problem", unreadable)
    path = _recipe_file(tmp_path, _issue_teacher(tmp_path / "mpnet"), max_length=64)
    path.write_text(path.read_text().replace("source: rotten_tomatoes", "source: missing.csv"))
    # execute
    with pytest.raises(RecipeError) as refused:
        check_recipe(load_recipe(path))
    # assert
    message = str(refused.value)
    assert "2 problem(s)" in message
    assert "teacher.max_length: tokenizer_config.json cannot be read" in message and "missing.csv" in message
