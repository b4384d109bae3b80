"""A Hugging Face ViT image classifier as teacher: students keep some of its layers (spread, as
DistilBERT), start from its weights, learn from its logits, export with parity and ship; a ViT
built for other images than the task's, and a HF image model that is no ViT, are refused before
any training."""

import json

import pytest
import torch

from edgekit.errors import RecipeError
from edgekit.modeling.networks import ImageModel
from edgekit.pipeline import distill_and_export
from edgekit.recipe import StudentSpace
from edgekit.stages.loading import check_recipe, recipe_from_dict
from edgekit.stages.students import TEXT_LAYER, build_image_student, image_candidates
from edgekit.testing import tiny_vit


def _recipe(folder, **overrides) -> dict:
    data = {"name": "vit-digits",
            "teacher": {"model": str(folder), "kind": "image-classifier", "head": "finetune", "epochs": 2,
                        "allow_weak": True},
            "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
            "students": {"layers": [1, 2]},
            "budget": {"ms": 1000, "min_runs": 50, "min_seconds": 0},
            "distill": {"epochs": 2, "lr": 1e-3},
            "quantize": {"variants": ["int8-dynamic"], "max_drop": None},
            "export": {"ort": False}}
    return recipe_from_dict({**data, **overrides})


def _digits_vit(folder):
    """A 4-layer random ViT on the digits' 8x8 grey images (4x4 patches)."""
    return tiny_vit(folder, image_size=8, patch_size=4, channels=1, layers=4)


def _mapped(name: str, layer_map: dict[int, int]) -> str:
    match = TEXT_LAYER.search(name)
    return name if not match else name[:match.start(1)] + str(layer_map[int(match.group(1))]) + name[match.end(1):]


def test_vit_students_keep_spread_layers_and_copy_every_tensor(tmp_path):
    # setup
    from transformers import ViTForImageClassification

    teacher = ImageModel(ViTForImageClassification.from_pretrained(_digits_vit(tmp_path / "vit")), "digits")
    # execute
    candidates = image_candidates(StudentSpace(layers=[1, 2]), teacher)
    student, init = build_image_student(teacher, candidates[1], 1, 10)
    # assert: L2 keeps layers 0 and 2 of 4; patch projection, embeddings, layers, layernorm and classifier copied
    assert [(c.name, c.arch["keep"]) for c in candidates] == [("L1", [0]), ("L2", [0, 2])]
    assert {"layers", "keep", "hidden", "heads", "ffn"} <= set(candidates[1].arch)
    assert init["random"] == [] and student.net.config.num_hidden_layers == 2
    teacher_state = teacher.net.state_dict()
    state = student.net.state_dict()
    for name, tensor in state.items():
        assert torch.equal(tensor, teacher_state[_mapped(name, {0: 0, 1: 2})]), name
    assert {"vit.embeddings.patch_embeddings.projection.weight", "vit.embeddings.cls_token",
            "classifier.weight"} <= set(state)
    # the layer pattern found the second layer (transformers 4.x: vit.encoder.layer.1., 5.x: vit.layers.1.)
    assert any((match := TEXT_LAYER.search(name)) and match.group(1) == "1" for name in state)


def test_vit_teacher_distills_exports_and_ships(tmp_path):
    # setup: 8x8 grey digits, as the ViT takes them
    recipe = _recipe(_digits_vit(tmp_path / "vit"))
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: 1- and 2-layer ViT students, initialized from the teacher, exported with parity, one shipped
    run = tmp_path / "run"
    students = [row for row in report.files if row["student"] != "teacher"]
    assert {row["student"] for row in students} == {"L1", "L2"}
    assert {row["variant"] for row in students} == {"fp32", "int8-dynamic"}
    for row in students:
        init = row["distillation"]["initialized_from_teacher"]
        assert init["copied_tensors"] > 0 and init["random_tensors"] == 0
    for name in ("L1", "L2"):
        parity = json.loads((run / "candidates" / name / "parity.json").read_text())
        assert all(o["max_abs_diff"] < 1e-4 for o in parity["outputs"].values()), parity
    assert report.selected is not None and (run / "bundle" / "model.onnx").is_file()
    assert report.selected["name"].split("-")[0] in ("L1", "L2")


def test_vit_built_for_other_images_is_refused_naming_both_shapes(tmp_path):
    # setup: a 16x16 RGB ViT against the 8x8 grey digits
    recipe = _recipe(tiny_vit(tmp_path / "vit"), students={"layers": [1]})
    # execute: the recipe check reads both shapes from the files, before any work
    with pytest.raises(RecipeError) as raised:
        distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: both shapes and the fix; no run folder
    message = str(raised.value)
    assert "(1, 8, 8)" in message and "(3, 16, 16)" in message and "Fix:" in message
    assert not (tmp_path / "run").exists()


def test_hf_image_model_that_is_no_vit_is_refused_up_front(tmp_path):
    # setup: a tiny ConvNeXt image classifier folder
    from transformers import ConvNextConfig, ConvNextForImageClassification

    folder = tmp_path / "convnext"
    config = ConvNextConfig(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=10)
    ConvNextForImageClassification(config).save_pretrained(folder)
    # execute / assert: refused by the recipe check, before any work
    with pytest.raises(RecipeError, match=r"'convnext' model.*vit.*Fix:"):
        check_recipe(_recipe(folder))
