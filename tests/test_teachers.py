"""Teachers a 2026 user brings: sentence-transformers folders (5 and 6 formats: pooling, Dense, Normalize, token
limit read from the folder, not restated in the recipe), decoder-based embedders (Qwen3, Gemma3) as teachers of
static students, and the folders edgekit refuses, each with the file and the fix."""

import json

import numpy as np
import pytest
import torch

from edgekit.errors import InvalidModelFile, RecipeError
from edgekit.modeling.models import load_hf, load_tokenizer, resolve_model, sentence_config
from edgekit.modeling.networks import TextModel, pool_tokens
from edgekit.names import POOLING_MODES
from edgekit.runtime.export import export_network
from edgekit.stages.loading import check_recipe
from edgekit.stages.students import text_candidates
from edgekit.stages.teacher import _dense_layers
from edgekit.testing import TINY_DECODERS, tiny_decoder_embedder, tiny_recipe, tiny_text_model, write_sentence_folder

TEXTS = ["the film is good", "a bad movie, and a dull story that is too long", "funny"]


def _sentence_transformers_6():
    """sentence-transformers 6, where installed (the current stack), to compare against; else the test skips."""
    st = pytest.importorskip("sentence_transformers")
    if int(st.__version__.split(".")[0]) < 6:
        pytest.skip(f"sentence-transformers {st.__version__} is not 6.x (the oldest stack)")
    return st


def _teacher(folder) -> TextModel:
    """The teacher's sentence encoder as edgekit builds it from the folder (teacher._text_teacher's pieces)."""
    source = resolve_model(str(folder))
    config = sentence_config(source)
    return TextModel(load_hf(source, "AutoModel"), "sentence-encoder", {}, config.pooling, config.normalize,
                     dense=_dense_layers(source)).eval()


@pytest.fixture(scope="module")
def st6_folder(tmp_path_factory):
    """A tiny BERT as a sentence-transformers 6 folder: cls pooling, a Tanh Dense 32 -> 16, Normalize."""
    folder = tiny_text_model(tmp_path_factory.mktemp("st6") / "model")
    return write_sentence_folder(folder, "cls", dense=[(32, 16)], activation="torch.nn.modules.activation.Tanh")


def test_a_sentence_transformers_6_folder_sets_what_the_recipe_leaves_out(st6_folder):
    # execute: a recipe that names no pooling, normalization or token limit
    recipe = tiny_recipe(st6_folder, teacher={"max_length": None})
    own = tiny_recipe(st6_folder, teacher={"pooling": "mean", "normalize": False, "max_length": 32})
    # assert: the folder's (the token limit is its tokenizer's, where sentence-transformers 6 saves it); what a
    # recipe says wins
    assert (recipe.teacher.pooling, recipe.teacher.normalize, recipe.teacher.max_length) == ("cls", True, 128)
    assert (own.teacher.pooling, own.teacher.normalize, own.teacher.max_length) == ("mean", False, 32)


def test_a_legacy_sentence_transformers_folder_reads_the_same(tmp_path):
    # setup: sentence-transformers <= 5: boolean pooling keys, max_seq_length in sentence_bert_config.json
    folder = tiny_text_model(tmp_path / "legacy")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False,
                                                                  "pooling_mode_max_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    # execute
    recipe = tiny_recipe(folder, teacher={"max_length": None})
    # assert: max pooling, no Normalize module (not normalized), 48 tokens
    assert (recipe.teacher.pooling, recipe.teacher.normalize, recipe.teacher.max_length) == ("max", False, 48)


def test_the_teacher_with_dense_layers_is_the_sentence_transformer_and_exports(st6_folder, tmp_path):
    st = _sentence_transformers_6()
    # setup
    teacher = _teacher(st6_folder)
    feed = dict(load_tokenizer(str(st6_folder))(TEXTS, padding=True, return_tensors="np"))
    # execute
    ours = teacher(**{name: torch.from_numpy(feed[name]) for name in teacher.input_names})[0].detach().numpy()
    theirs = st.SentenceTransformer(str(st6_folder), device="cpu").encode(TEXTS)
    parity = export_network(teacher, tmp_path / "model.onnx", [{name: feed[name] for name in teacher.input_names}])
    # assert: the same 16-wide normalized embeddings, and the ONNX file matches them
    assert ours.shape == (3, 16) and np.abs(ours - theirs).max() < 1e-5
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-5 and parity["exporter"] == "torch.export"


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_every_pooling_mode_pools_as_sentence_transformers_does(mode, side):
    _sentence_transformers_6()
    # setup: 3 texts of 5, 2 and 4 tokens padded to 5 on either side
    hidden = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 2, 4])
    positions = torch.arange(5).expand(3, 5)
    mask = (positions < lengths[:, None]) if side == "right" else (positions >= 5 - lengths[:, None])
    from sentence_transformers.sentence_transformer.modules import Pooling

    pooling = Pooling(8, pooling_mode=mode)
    # execute
    ours = pool_tokens(hidden, mask.long(), mode)
    theirs = pooling({"token_embeddings": hidden, "attention_mask": mask.long()})["sentence_embedding"]
    # assert
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("model_type", TINY_DECODERS)
def test_a_decoder_embedder_is_its_sentence_transformer_and_exports(model_type, tmp_path):
    st = _sentence_transformers_6()
    # setup: Qwen3 with last-token pooling; Gemma3 (EmbeddingGemma) with mean pooling and two Dense layers
    folder = tiny_decoder_embedder(tmp_path / model_type, model_type)
    teacher = _teacher(folder)
    feed = dict(load_tokenizer(str(folder))(TEXTS, padding=True, return_tensors="np"))
    feed = {name: feed[name] for name in teacher.input_names}
    # execute
    ours = teacher(**{name: torch.from_numpy(value) for name, value in feed.items()})[0].detach().numpy()
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    parity = export_network(teacher, tmp_path / "model.onnx", [feed])
    # assert
    assert np.abs(ours - theirs).max() < 1e-5
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("model_type", TINY_DECODERS)
def test_static_students_need_no_family_and_layer_students_name_the_fix(model_type, tmp_path):
    # setup
    folder = tiny_decoder_embedder(tmp_path / model_type, model_type)
    static_only = tiny_recipe(folder, students={"static": [8]})
    static_only = static_only.model_copy(update={"students": type(static_only.students)(static=[8])})
    layers = tiny_recipe(folder, students={"layers": [1], "static": [8]})
    # execute / assert: students.layers left at its default, static students named: the recipe is fine and
    # no transformer student is derived; students.layers given: refused before any work, naming the fix
    check_recipe(static_only)
    config = load_hf(resolve_model(str(folder)), "AutoModel").config
    assert text_candidates(config, static_only.students) == []
    with pytest.raises(RecipeError) as refused:
        check_recipe(layers)
    assert f"'{model_type}' model" in str(refused.value) and "layers: []" in str(refused.value)


def test_a_qwen3_teacher_distills_a_static_student_end_to_end(tmp_path):
    # setup
    from edgekit.pipeline import distill_and_export

    folder = tiny_decoder_embedder(tmp_path / "qwen3", "qwen3")
    # the fewest timed runs the budget allows: no latency is judged here
    recipe = tiny_recipe(folder, students={"layers": [], "static": [8]}, quantize={"max_drop": None},
                         teacher={"max_length": None}, budget={"min_runs": 20, "rounds": 1})
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: the teacher (last-token pooled, exported with parity) and the static student, scored and shipped
    assert recipe.teacher.pooling == "lasttoken"
    students = {row["student"] for row in report.files}
    assert students == {"teacher", "S8"}
    assert report.selected is not None and (tmp_path / "run" / "bundle" / "model.onnx").is_file()


@pytest.mark.parametrize("change, expected", [
    (lambda f: _modules(f, [{"type": "sentence_transformers.models.Transformer", "path": ""},
                            {"type": "sentence_transformers.models.Pooling", "path": "../other"}]), "outside"),
    (lambda f: _modules(f, [{"type": "sentence_transformers.models.Transformer", "path": ""},
                            {"type": "my_package.CustomPooling", "path": "1"}]), "never imported"),
    (lambda f: (f / "modules.json").write_text('[{"type": '), "not valid JSON"),
    (lambda f: (f / "modules.json").write_text("[" * 100_000 + "]" * 100_000), "more than 100 deep"),
    (lambda f: (f / "modules.json").write_text('{"a": 1}'), "not a JSON array"),
])
def test_a_folder_edgekit_cannot_run_is_refused_naming_the_file(change, expected, tmp_path):
    # setup
    folder = tiny_text_model(tmp_path / "model")
    (tmp_path / "other").mkdir()
    change(folder)
    # execute / assert: resolving the folder and the recipe check both say what is wrong and where
    with pytest.raises(InvalidModelFile, match=expected) as refused:
        resolve_model(str(folder))
    assert str(folder) in str(refused.value)
    with pytest.raises(RecipeError, match=expected):
        check_recipe(tiny_recipe(folder))


def _modules(folder, modules):
    (folder / "modules.json").write_text(json.dumps(modules))


def test_a_max_length_beyond_the_teachers_positions_fails_the_recipe_check(tmp_path):
    # setup: a 128-position BERT
    folder = tiny_text_model(tmp_path / "model")
    # execute / assert
    with pytest.raises(RecipeError, match="at most 128"):
        check_recipe(tiny_recipe(folder, teacher={"max_length": 1024}))
