"""Students from every encoder family edgekit supports, on tiny random models of each family's own
config class: derived, initialized from the teacher, run, exported and parity-checked; one whole
run on a sentence-transformers MPNet folder; and a clear error, before any work, for the rest
(image teachers: tests/test_vit.py)."""

import json

import pytest
import torch

from edgekit.errors import RecipeError
from edgekit.modeling.families import TEXT_FAMILIES
from edgekit.modeling.models import load_hf, load_tokenizer, resolve_model
from edgekit.modeling.networks import TextModel
from edgekit.recipe import StudentSpace
from edgekit.runtime.export import export_network
from edgekit.stages.students import TEXT_LAYER, build_text_student, text_candidates
from edgekit.testing import TINY_FAMILIES, tiny_family_model, tiny_recipe

TEXTS = ["the film is good", "a bad movie, and a dull story that is too long", "funny"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> a tiny 4-layer sentence-encoder folder (built once per module)."""
    root = tmp_path_factory.mktemp("families")
    return {family: tiny_family_model(root / family, family) for family in TINY_FAMILIES}


def _teacher(folder, kind="sentence-encoder", **kwargs):
    """The teacher as edgekit loads it (edgekit.modeling.models.load_hf, the transformers defaults)."""
    if kind == "sequence-classifier":
        return TextModel(load_hf(resolve_model(str(folder)), "AutoModelForSequenceClassification", **kwargs), kind,
                         classifier_task="sentiment")
    encoder = load_hf(resolve_model(str(folder)), "AutoModel", **kwargs)
    return TextModel(encoder, kind, {"sentiment": torch.nn.Linear(encoder.config.hidden_size, 2)})


def _feeds(folder) -> list[dict]:
    """Real padded batches from the folder's tokenizer (pad id 1 for the RoBERTa-like families)."""
    encoded = load_tokenizer(str(folder))(TEXTS, padding=True, return_tensors="np")
    ids = encoded["input_ids"].astype("int64")
    return [{"input_ids": ids, "attention_mask": encoded["attention_mask"].astype("int64"),
             "token_type_ids": 0 * ids}]


def _mapped(name: str, layer_map: dict[int, int]) -> str:
    match = TEXT_LAYER.search(name)
    if not match:
        return name
    return name[:match.start(1)] + str(layer_map[int(match.group(1))]) + name[match.end(1):]


def test_every_supported_family_has_a_tiny_model():
    # assert: a family is supported only with a test model here
    assert set(TINY_FAMILIES) == set(TEXT_FAMILIES)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_student_keeps_teacher_layers_runs_and_exports(family, folders, tmp_path):
    # setup
    teacher = _teacher(folders[family])
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[2]))[0]
    feeds = _feeds(folders[family])
    # execute
    student, init = build_text_student(teacher, candidate)
    parity = export_network(student, tmp_path / "model.onnx", feeds)
    # assert: layers 0 and 2 of 4 (spread), every tensor copied from its mapped teacher tensor
    assert candidate.arch["keep"] == [0, 2] and student.backbone.config.num_hidden_layers == 2
    assert init["random"] == [] and init["copied"] == len(student.backbone.state_dict())
    teacher_state = teacher.backbone.state_dict()
    layered = 0
    for name, tensor in student.backbone.state_dict().items():
        assert torch.equal(tensor, teacher_state[_mapped(name, {0: 0, 1: 2})]), name
        layered += (match := TEXT_LAYER.search(name)) is not None and match.group(1) == "1"
    assert layered > 0  # the layer pattern found the family's layers
    # the attention transformers picks for the family (sdpa where the installed release has it, else eager)
    assert student.backbone.config._attn_implementation == teacher.backbone.config._attn_implementation
    assert student.input_names == teacher.input_names
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-4
    assert parity["outputs"]["sentiment_logits"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("family", [family for family in TINY_FAMILIES if TEXT_FAMILIES[family].narrow])
def test_narrow_student_slices_the_teacher_and_exports(family, folders, tmp_path):
    # setup
    teacher = _teacher(folders[family])
    space = StudentSpace(layers=[1], hidden=[16], heads=[1], ffn=[32])
    candidate = text_candidates(teacher.backbone.config, space)[0]
    # execute
    student, init = build_text_student(teacher, candidate)
    parity = export_network(student, tmp_path / "model.onnx", _feeds(folders[family]))
    # assert: the family's own width names follow (DistilBERT's hidden_dim, DeBERTa's pooler width)
    config = student.backbone.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (16, 1, 1)
    assert getattr(config, TEXT_FAMILIES[family].ffn) == 32
    words = student.backbone.get_input_embeddings().weight
    teacher_words = teacher.backbone.get_input_embeddings().weight
    assert torch.equal(words, teacher_words[:, :words.shape[1]])
    assert init["copied"] > 0 and len(init["random"]) == 0
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-4


def test_modernbert_students_keep_its_layer_types_and_refuse_narrower_widths(folders):
    # setup: 4 layers alternating global and sliding-window attention
    teacher = _teacher(folders["modernbert"])
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[2], layer_choice="last"))[0]
    # execute
    student, _ = build_text_student(teacher, candidate)
    # assert: the kept layers (2 and 3) keep their attention, whatever their new index
    layer_types = getattr(teacher.backbone.config, "layer_types", None)
    if layer_types is not None:  # transformers 5 (4.57 derives them from global_attn_every_n_layers)
        assert student.backbone.config.layer_types == layer_types[2:]
    with pytest.raises(RecipeError, match="keep the teacher's widths"):
        text_candidates(teacher.backbone.config, StudentSpace(layers=[1], hidden=[16]))


def test_deberta_head_size_follows_a_narrower_student(folders, tmp_path):
    # setup: the teacher's config spells out attention_head_size 16 (32 wide, 2 heads)
    teacher = _teacher(folders["deberta-v2"])
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[1], hidden=[16]))[0]
    # execute
    student, _ = build_text_student(teacher, candidate)
    parity = export_network(student, tmp_path / "model.onnx", _feeds(folders["deberta-v2"]))
    # assert: 16 wide with the teacher's 2 heads -> heads of 8
    assert teacher.backbone.config.attention_head_size == 16
    assert student.backbone.config.attention_head_size == 8
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "deberta-v2"])
def test_sequence_classifier_student_keeps_the_head_shape(family, tmp_path):
    # setup
    folder = tiny_family_model(tmp_path / family, family, task="text-classification")
    teacher = _teacher(folder, "sequence-classifier")
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[1], hidden=[16]))[0]
    # execute
    student, init = build_text_student(teacher, candidate)
    parity = export_network(student, tmp_path / "model.onnx", _feeds(folder))
    # assert
    assert student.output_names == ["sentiment_logits"] and init["random"] == []
    assert parity["outputs"]["sentiment_logits"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("family", ["mpnet", "deberta-v2"])
def test_attention_loss_gets_attention_maps_from_eager_only_families(family, folders):
    # setup: the teacher loaded as the pipeline does for the attention loss
    teacher = _teacher(folders[family], attn_implementation="eager")
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[1]))[0]
    batch = {k: torch.from_numpy(v) for k, v in _feeds(folders[family])[0].items()}
    # execute
    student, _ = build_text_student(teacher, candidate, attention_outputs=True)
    out = student.internals(**batch, hidden=True, attention=True)
    # assert
    seq = batch["input_ids"].shape[1]
    assert [tuple(a.shape) for a in out["attention"]] == [(3, 2, seq, seq)]
    assert len(out["hidden"]) == 2


def _gpt2_folder(folder):
    """A tiny GPT-2 (a decoder: no family edgekit derives students from), loadable by AutoModel."""
    from transformers import AutoModel, GPT2Config

    source = tiny_family_model(folder, "bert")  # for its tokenizer files
    config = GPT2Config(vocab_size=load_tokenizer(str(source)).vocab_size, n_embd=32, n_layer=2, n_head=2,
                        n_positions=128)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def test_unsupported_architecture_fails_before_any_work(tmp_path):
    # setup
    from edgekit.pipeline import distill_and_export
    from edgekit.stages.loading import check_recipe

    recipe = tiny_recipe(_gpt2_folder(tmp_path / "gpt2"))
    # execute
    with pytest.raises(RecipeError) as checked:
        check_recipe(recipe)
    with pytest.raises(RecipeError):
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: the architecture, the supported families and the fix; nothing was run or written
    message = str(checked.value)
    assert "teacher.model" in message and "'gpt2' model" in message and "GPT2Model" in message
    assert all(name in message for name in TEXT_FAMILIES) and "Fix:" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_unsupported_config_from_the_hub_fails_where_candidates_are_derived():
    # setup: a hub teacher's config is only known once loaded; candidates are derived before any training
    from transformers import GPT2Config

    # execute / assert
    with pytest.raises(RecipeError, match=r"'gpt2' model, and those are derived from .*mpnet.*static"):
        text_candidates(GPT2Config(n_layer=4), StudentSpace(layers=[1]))


def test_mpnet_sentence_transformer_runs_end_to_end(folders, tmp_path):
    # setup: a sentence-transformers MPNet folder (modules.json, 1_Pooling), as from the hub; no
    # accuracy-aware int8 search (max_drop: null), which is the same for every family, and the fewest timed runs
    # the budget allows (no latency is judged here), to stay quick
    from edgekit.pipeline import distill_and_export

    folder = folders["mpnet"]
    assert (folder / "modules.json").is_file()
    recipe = tiny_recipe(folder, quantize={"max_drop": None}, budget={"min_runs": 20, "rounds": 1})
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: a distilled 1-layer MPNet student, initialized from the teacher, exported, scored, shipped
    run = tmp_path / "run"
    students = [row for row in report.files if row["student"] != "teacher"]
    assert {row["student"] for row in students} == {"L1"}
    assert {row["variant"] for row in students} == {"fp32", "int8-dynamic", "int8-static-minmax"}
    init = students[0]["distillation"]["initialized_from_teacher"]
    assert init["copied_tensors"] > 0 and init["random_tensors"] == 0
    config = json.loads((run / "candidates" / "L1" / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"]) == ("mpnet", 1)
    assert report.selected is not None and (run / "bundle" / "model.onnx").is_file()
