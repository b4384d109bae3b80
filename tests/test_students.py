import pytest
import torch

from edgekit.errors import RecipeError
from edgekit.modeling.networks import TextModel, count_parameters
from edgekit.recipe import StudentSpace
from edgekit.stages.students import build_text_student, kept_layers, text_candidates


@pytest.fixture(scope="module")
def tiny_teacher(tiny_bert):
    from transformers import AutoModel

    return TextModel(AutoModel.from_pretrained(tiny_bert), "sentence-encoder", {"sentiment": torch.nn.Linear(32, 2)})


def test_layer_choice_follows_distilbert():
    # assert
    assert kept_layers(6, 3, "spread") == [0, 2, 4]
    assert kept_layers(6, 2, "spread") == [0, 3]
    assert kept_layers(6, 2, "first") == [0, 1]
    assert kept_layers(6, 2, "last") == [4, 5]


def test_candidates_span_the_space_and_reject_impossible_shapes(tiny_teacher):
    # setup
    config = tiny_teacher.backbone.config  # 2 layers, hidden 32, 2 heads
    # execute
    candidates = text_candidates(config, StudentSpace(layers=[1], hidden=[None, 16]))
    # assert
    assert [c.name for c in candidates] == ["L1", "L1-h16"]
    assert candidates[1].arch == {"layers": 1, "keep": [0], "hidden": 16, "heads": 2, "ffn": 64}
    with pytest.raises(RecipeError, match="between 1 and 1"):
        text_candidates(config, StudentSpace(layers=[2]))
    with pytest.raises(RecipeError, match="not divisible"):
        text_candidates(config, StudentSpace(layers=[1], hidden=[15]))


def test_student_starts_from_the_mapped_teacher_layer(tiny_teacher):
    # setup
    candidate = text_candidates(tiny_teacher.backbone.config, StudentSpace(layers=[1], layer_choice="last"))[0]
    # execute
    student, init = build_text_student(tiny_teacher, candidate)
    # assert
    s, t = student.backbone.encoder.layer[0], tiny_teacher.backbone.encoder.layer[1]
    assert torch.equal(s.attention.self.query.weight, t.attention.self.query.weight)
    assert torch.equal(student.heads["sentiment"].weight, tiny_teacher.heads["sentiment"].weight)
    assert init["random"] == [] and count_parameters(student) < count_parameters(tiny_teacher)


def test_narrow_student_projects_into_the_teacher_space_and_exports(tiny_teacher, tmp_path):
    # setup
    from edgekit.runtime.export import export_network

    candidate = text_candidates(tiny_teacher.backbone.config, StudentSpace(layers=[1], hidden=[16]))[0]
    student, _ = build_text_student(tiny_teacher, candidate)
    ids = torch.randint(5, 40, (3, 7)).numpy()
    feeds = [{"input_ids": ids, "attention_mask": (ids > 0).astype("int64"), "token_type_ids": 0 * ids}]
    # execute
    parity = export_network(student, tmp_path / "model.onnx", feeds)
    # assert
    assert student.output_names == ["embedding", "sentiment_logits"]
    assert parity["outputs"]["embedding"]["max_abs_diff"] < 1e-4
    out = student.internals(**{k: torch.from_numpy(v) for k, v in feeds[0].items()})
    assert out["embedding"].shape == (3, 32)  # the teacher's width, through the projection


def test_layer_losses_pair_each_student_layer_with_its_teacher_layer(tiny_bert):
    # setup
    from transformers import AutoModel

    from edgekit.recipe import LossSpec
    from edgekit.stages.distill.losses import total_loss

    teacher = TextModel(AutoModel.from_pretrained(tiny_bert, attn_implementation="eager"), "sentence-encoder")
    candidate = text_candidates(teacher.backbone.config, StudentSpace(layers=[1], layer_choice="last"))[0]
    student, _ = build_text_student(teacher, candidate, attention_outputs=True)
    ids = torch.randint(5, 40, (2, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    specs = [LossSpec(name="hidden_mse"), LossSpec(name="attention")]
    with torch.no_grad():
        t_out = teacher.internals(**batch, hidden=True, attention=True)  # hidden: embeddings, layer 0, layer 1
    # a student whose one layer reproduces teacher layer 1 exactly
    perfect = {"mask": batch["attention_mask"], "hidden": [t_out["hidden"][0], t_out["hidden"][2]],
               "attention": [t_out["attention"][1]]}
    # execute
    s_out = student.internals(**batch, hidden=True, attention=True)
    loss, parts = total_loss(specs, s_out, t_out, {"labels": {}, "layer_map": {0: 1}})
    loss.backward()
    paired, _ = total_loss(specs, perfect, t_out, {"labels": {}, "layer_map": {0: 1}})
    mispaired, _ = total_loss(specs, perfect, t_out, {"labels": {}, "layer_map": {0: 0}})
    # assert
    assert set(parts) == {"hidden_mse", "attention"} and loss.item() > 0
    assert student.backbone.encoder.layer[0].attention.self.query.weight.grad is not None
    assert paired.item() == 0 and mispaired.item() > 0
