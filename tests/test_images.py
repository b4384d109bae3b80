"""Image data as users have it (issue 15): .npz/.npy files of uint8 or float images in any of three layouts,
named arrays, preprocessing fit on the training split and applied everywhere, and edgekit:cnn defaults that
train. The digits are scikit-learn's 8x8 images, as uint8 pixels (0-255) and upscaled to 28x28."""

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.data import load_images
from edgekit.data.tasks import load_task_data, spec_problems
from edgekit.errors import DataError, RecipeError
from edgekit.loading import load_recipe, recipe_from_dict
from edgekit.pipeline import distill_and_export
from edgekit.preprocessing import layout_of


def _digits(size: int = 8):
    """scikit-learn's 1,797 digits as uint8 pixels (N, size, size) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images  # (N, 8, 8), 0..16
    if size == 28:  # 3x3 blocks (24x24) and a 2-pixel border, as MNIST-sized images are
        images = np.pad(np.kron(images, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    return (images * 255 / 16).round().astype(np.uint8), digits.target


def _task(source, **data):
    return recipe_from_dict(_recipe(source, **data)).tasks[0]


def _recipe(source, teacher=None, distill=None, **data) -> dict:
    """An edgekit:cnn recipe at the defaults (unless `teacher`/`distill` say otherwise) on an image file."""
    return {"name": "digits", "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune",
                                          **(teacher or {})},
            "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": str(source), **data}}],
            "budget": {"ms": 1000, "min_runs": 20, "min_seconds": 0, "rounds": 1},
            "quantize": {"variants": [], "teacher": False}, "export": {"ort": False},
            **({"distill": distill} if distill else {})}


@pytest.mark.parametrize(("shape", "layout", "expected"), [
    ((5, 28, 28), "auto", "NHW"),
    ((5, 28, 28, 1), "auto", "NHWC"),
    ((5, 32, 32, 3), "auto", "NHWC"),
    ((5, 3, 32, 32), "auto", "NCHW"),
    ((5, 4, 8, 8), "auto", "NCHW"),
    ((5, 3, 32, 3), "NHWC", "NHWC"),  # ambiguous: the override decides
    ((5, 3, 32, 3), "NCHW", "NCHW"),
])
def test_layout_rule(shape, layout, expected):
    # execute / assert
    assert layout_of(shape, layout) == (expected, None)


@pytest.mark.parametrize(("shape", "layout", "message"), [
    ((5, 3, 32, 3), "auto", "both axes 1 and 3 could be the channels"),
    ((5, 28, 28, 28), "auto", "neither axis 1 nor axis 3"),
    ((5, 28, 28), "NHWC", "leave data.layout at auto"),
    ((5, 784), "auto", "(N, H, W), (N, H, W, C) or (N, C, H, W)"),
])
def test_layouts_that_cannot_be_told_name_the_key(shape, layout, message):
    # execute
    found, problem = layout_of(shape, layout)
    # assert
    assert found is None and message in problem and ("data.layout" in problem or len(shape) == 2)


def test_npz_with_named_arrays_channels_last_is_standardized_with_training_statistics(tmp_path):
    # setup: RGB images stored (N, H, W, C) under names of the user's own
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(50, 6, 6, 3), dtype=np.uint8)
    pixels[..., 2] //= 4  # a darker blue channel: the statistics are per channel
    np.savez(tmp_path / "photos.npz", pics=pixels, y=np.array(["cat", "dog"] * 25))
    # execute
    data = load_task_data(_task(tmp_path / "photos.npz", image="pics", label="y"))
    # assert: (N, C, H, W) float32, each channel of the training side at mean 0 / std 1
    train, test, record = data.train["image"], data.test["image"], data.preprocessing
    assert train.shape == (40, 3, 6, 6) and test.shape == (10, 3, 6, 6) and train.dtype == np.float32
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert record["source"] == {"data": str(tmp_path / "photos.npz"), "dtype": "uint8", "layout": "NHWC",
                                "image_shape": [6, 6, 3]}
    assert record["scale_text"] == "1/255" and record["fit_on"] == {"split": "train", "images": 40}
    assert record["mean"][2] < record["mean"][0] / 2  # the blue channel has statistics of its own
    # the test side is transformed with the training side's numbers, not its own
    assert abs(test.mean()) > 1e-3
    raw_test = np.concatenate([pixels[i:i + 1] for i in range(50) if any(
        np.allclose((pixels[i].transpose(2, 0, 1) / 255 - np.reshape(record["mean"], (3, 1, 1)))
                    / np.reshape(record["std"], (3, 1, 1)), t, atol=1e-5) for t in test)])
    assert len(raw_test) == 10


def test_uint8_and_float_pixels_become_the_same_input(tmp_path):
    # setup: the same digits as uint8 (0-255) and as float in [0, 1]
    pixels, labels = _digits()
    np.savez(tmp_path / "u8.npz", images=pixels, labels=labels)
    np.savez(tmp_path / "f32.npz", images=pixels.astype(np.float32) / 255, labels=labels)
    # execute
    u8, f32 = (load_task_data(_task(tmp_path / name)) for name in ("u8.npz", "f32.npz"))
    # assert: standardization removes the scale the user stored them at
    np.testing.assert_allclose(u8.train["image"], f32.train["image"], atol=1e-4)
    assert (u8.preprocessing["scale_text"], f32.preprocessing["scale_text"]) == ("1/255", "1")


def test_a_test_file_of_images_gets_the_training_files_transform(tmp_path):
    # setup: training and test images in files of their own; the test images are brighter
    pixels, labels = _digits()
    np.savez(tmp_path / "train.npz", images=pixels[:1000], labels=labels[:1000])
    np.savez(tmp_path / "test.npz", images=np.minimum(pixels[1000:].astype(int) + 40, 255).astype(np.uint8),
             labels=labels[1000:])
    np.savez(tmp_path / "float.npz", images=pixels[1000:] / 255, labels=labels[1000:])
    def task(test_file):
        recipe = _recipe(tmp_path / "train.npz")
        recipe["tasks"][0]["split"] = {"test_file": str(tmp_path / test_file)}
        return recipe_from_dict(recipe).tasks[0]

    # execute
    data = load_task_data(task("test.npz"))
    with pytest.raises(DataError, match="same shape, layout and dtype"):
        load_task_data(task("float.npz"))
    # assert: statistics of the training file only, applied to the test file
    assert data.preprocessing["fit_on"]["images"] == len(data.train["image"]) <= 1000
    assert abs(data.train["image"].mean()) < 1e-4 and data.test["image"].mean() > 0.3


def test_wrong_array_names_and_keys_that_do_not_apply_are_errors(tmp_path):
    # setup
    pixels, labels = _digits()
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(_recipe(tmp_path / "d.npz", text="nope"), indent=1))
    # execute
    with pytest.raises(DataError) as missing:
        load_task_data(_task(tmp_path / "d.npz", image="pixels", label="y"))
    problems = spec_problems(_task(tmp_path / "d.npz", label="y").data, "image-classification", "tasks[0].data")
    with pytest.raises(RecipeError) as ignored:
        load_recipe(recipe)
    # assert: the arrays the file has, and the key that names them
    assert "no array 'pixels' for the images (it has: x, y)" in str(missing.value)
    assert "set data.image" in str(missing.value)
    assert len(problems) == 1 and problems[0].startswith("tasks[0].data.image: ")
    assert "no array 'image' or 'images'" in problems[0] and "(it has: x, y)" in problems[0]
    # `text: nope` is an error at its line, not ignored
    assert re.search(r"r\.yaml:\d+: tasks\.0\.data: text does not apply to image data", str(ignored.value))


def test_ambiguous_layout_is_an_error_until_the_recipe_says_it(tmp_path):
    # setup: (N, 3, 8, 3) could be 3 channels of 8x3 or 3 channels of 3x8
    images = np.random.default_rng(0).integers(0, 256, size=(10, 3, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(10) % 2)
    # execute
    problems = spec_problems(_task(tmp_path / "a.npz").data, "image-classification", "tasks[0].data")
    data = load_task_data(_task(tmp_path / "a.npz", layout="NHWC"))
    # assert
    assert len(problems) == 1 and problems[0].startswith("tasks[0].data.layout: ") and "NHWC" in problems[0]
    assert data.train["image"].shape[1:] == (3, 3, 8)


def test_npy_images_for_the_cli_are_moved_channels_first(tmp_path):
    # setup
    np.save(tmp_path / "hwc.npy", np.ones((4, 5, 6, 3), dtype=np.uint8))
    np.save(tmp_path / "nan.npy", np.full((2, 1, 4, 4), np.nan, dtype=np.float32))
    # execute
    images = load_images(str(tmp_path / "hwc.npy"))
    # assert: layout only; values as stored (these feed a user's own model file)
    assert images.shape == (4, 3, 5, 6) and images.dtype == np.float32 and images.max() == 1
    with pytest.raises(DataError, match="NaN or inf"):
        load_images(str(tmp_path / "nan.npy"))


def test_cnn_recipes_get_training_defaults_that_train(tmp_path):
    # execute
    defaults = recipe_from_dict(_recipe("digits"))
    chosen = recipe_from_dict(_recipe("digits", teacher={"lr": 1e-3}, distill={"epochs": 2}))
    reloaded = recipe_from_dict(defaults.model_dump(mode="json"))
    # assert: the from-scratch defaults, a recipe's own values kept, stable through report.json
    assert (defaults.teacher.lr, defaults.teacher.epochs) == (3e-3, 10)
    assert (defaults.distill.lr, defaults.distill.epochs, [loss.name for loss in defaults.distill.losses]) == \
        (3e-3, 30, ["kl"])
    assert (chosen.teacher.lr, chosen.distill.lr, chosen.distill.epochs) == (1e-3, 3e-3, 2)
    assert reloaded.sha256() == defaults.sha256()


def _snippet(readme: str) -> str:
    return re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)


def test_digits_npz_at_the_defaults_train_distill_and_ship_their_preprocessing(tmp_path):
    # setup: 8x8 uint8 digits as a user would save them; fewer epochs than the defaults, to stay quick
    pixels, labels = _digits()
    np.savez(tmp_path / "digits.npz", images=pixels, labels=labels)
    recipe = recipe_from_dict(_recipe(tmp_path / "digits.npz", teacher={"epochs": 4}, distill={"epochs": 4}))
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    # assert: far above chance (0.1), and the students keep most of it
    teacher, *students = report.files
    assert teacher["metrics"]["digits"]["value"] > 0.9
    assert students and all(s["retention"]["digits"] > 90 for s in students)
    # the run and the bundle record the same transform
    run_record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    bundle = tmp_path / "run" / "bundle"
    record = json.loads((bundle / "preprocessing.json").read_text())
    assert record["input"] == "pixel_values" and record["layout"] == "NCHW"
    assert {k: record[k] for k in ("scale", "mean", "std", "source")} == \
        {k: run_record[k] for k in ("scale", "mean", "std", "source")}
    # the README's snippet, fed the raw uint8 images, makes exactly the inputs the run measured
    code = _snippet((bundle / "README.md").read_text())
    code = re.sub(r"pixels = np\.zeros\(.*", "pixels = raw", code)
    scope = {"raw": pixels}
    import os

    here = os.getcwd()
    try:
        os.chdir(bundle)
        exec(code, scope)  # noqa: S102 (the README's own code, on the bundle it describes)
    finally:
        os.chdir(here)
    feeds = scope["feeds"]["pixel_values"]
    reference = np.load(bundle / "reference.npz")
    measured = np.concatenate([reference[k] for k in sorted(reference.files) if k.startswith("in/dynamic/")])
    flat = feeds.reshape(len(feeds), -1)
    assert all(np.abs(flat - row.reshape(1, -1)).max(axis=1).min() < 1e-5 for row in measured)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    accuracy = (session.run(None, {"pixel_values": feeds})[0].argmax(1) == labels).mean()
    assert accuracy > 0.9


@pytest.mark.slow
def test_28x28_uint8_digits_at_the_defaults_reach_95_percent_and_students_keep_95_percent(tmp_path):
    # setup: the case: 28x28 uint8 digits in an .npz, edgekit:cnn and distillation at their defaults
    pixels, labels = _digits(28)
    np.savez(tmp_path / "digits28.npz", images=pixels, labels=labels)
    # execute
    report = distill_and_export(recipe_from_dict(_recipe(tmp_path / "digits28.npz")), out=tmp_path / "run",
                                cache_dir=tmp_path / "cache", echo=print)
    # assert
    teacher, *students = report.files
    assert teacher["metrics"]["digits"]["value"] >= 0.95
    assert students and all(s["retention"]["digits"] >= 95 for s in students), [
        (s["name"], s["retention"]) for s in students]
