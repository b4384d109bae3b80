"""Image data as users have it (issue 15): .npz/.npy files of uint8 or float images in any of three layouts,
named arrays, preprocessing fit on the training split and applied everywhere, and edgekit:cnn defaults that
train. The digits are scikit-learn's 8x8 images, as uint8 pixels (0-255) and upscaled to 28x28."""

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.data import load_images
from edgekit.data.preprocessing import layout_of
from edgekit.data.tasks import load_task_data, spec_problems
from edgekit.errors import DataError, RecipeError
from edgekit.pipeline import distill_and_export
from edgekit.stages.loading import load_recipe, recipe_from_dict


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


DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_image_class_names_are_one_per_class_number_and_a_wrong_count_names_the_recipe_line(tmp_path):
    # setup: 300 digits in an .npz, their labels the class numbers 0..9
    import yaml

    from edgekit.stages.loading import load_tasks

    pixels, labels = _digits()
    np.savez(tmp_path / "digits.npz", images=pixels[:300], labels=labels[:300])
    # execute: the names given, and left out
    named = load_task_data(_task(tmp_path / "digits.npz", labels=DIGIT_NAMES))
    numbered = load_task_data(_task(tmp_path / "digits.npz"))
    # assert: class i is labels[i], the same examples on the same sides as without names
    assert named.labels == DIGIT_NAMES and numbered.labels == [str(i) for i in range(10)]
    assert np.array_equal(named.test["label"], numbered.test["label"]) and not named.skipped
    # a list one short or one long stops loading, naming the recipe's line, the class numbers and the fix
    for names in (DIGIT_NAMES[:9], [*DIGIT_NAMES, "ten"]):
        path = tmp_path / "digits.yaml"
        path.write_text(yaml.safe_dump(_recipe(tmp_path / "digits.npz", labels=names)))
        with pytest.raises(DataError) as caught:
            load_tasks(load_recipe(path))
        message = str(caught.value)
        assert re.search(r"digits\.yaml:\d+", message) and f"data.labels names {len(names)} classes" in message
        assert "class numbers 0..9 (10 classes)" in message and "give data.labels exactly 10 names" in message


def test_an_image_closest_miss_names_the_images_it_timed_and_no_sequence_fix():
    # setup: a ViT run (layered students, like a text run's) where nothing fits; the teacher's file is the fastest
    from edgekit.recipe import Budget
    from edgekit.stages.select import closest_miss, nothing_feasible

    budget = Budget(ms=0.001, headroom=0.0, min_retention=None)
    rows = [{"name": "teacher-fp32", "architecture": None, "latency_ms": {"p95": 0.5}, "size_bytes": 10},
            {"name": "L1-fp32", "architecture": {"layers": 1, "hidden": 32}, "latency_ms": {"p95": 0.6},
             "size_bytes": 5}]
    probes = {"cnn-w4-d1": {"architecture": {"width": 4, "depth": 1},
                            "variants": {"fp32": {"latency_ms": {"p95": 0.2}, "size_bytes": 5}}}}
    # execute
    miss = closest_miss(rows, budget, "file", True, image_shape=(3, 16, 16))
    probed = nothing_feasible(probes, budget, True, (1, 8, 8))
    # assert: the batch is of images; no sequence length to shorten; the student knobs of the students there are
    assert "at batch 1, images 3x16x16 (C x H x W), on cpu with 1 thread(s)" in miss
    assert "at batch 1, images 1x8x8 (C x H x W), on cpu" in probed
    assert not re.search(r"\bseq", miss + probed)
    assert "students.layers" in miss and "students.widths" in probed


def test_an_image_run_reports_its_timed_images_not_a_sequence_length_and_names_its_classes(tmp_path):
    # setup: the digits built-in with its classes named, on a phone target (fixed shapes), a tiny CNN
    from edgekit.stages.report import render_html, render_markdown

    recipe = recipe_from_dict({
        "name": "digits-named", "target": "arm64-phone",
        "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune", "width": 8, "depth": 2,
                    "epochs": 3, "batch_size": 64},
        "tasks": [{"name": "digits", "kind": "image-classification",
                   "data": {"source": "digits", "labels": DIGIT_NAMES}}],
        "students": {"widths": [4], "depths": [1]},
        "budget": {"ms": 1000, "min_runs": 20, "min_seconds": 0, "rounds": 1, "min_retention": None},
        "distill": {"epochs": 2, "batch_size": 64}, "quantize": {"variants": []}})
    messages = []
    # execute
    report = distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=messages.append)
    # assert: report.json records the image shape each timed input had, and no sequence length
    data, run = report.data, tmp_path / "run"
    assert data["budget"]["image_shape"] == [1, 8, 8] and data["budget"]["seq_len"] is None
    shape = "batch 1, images 1x8x8 (C x H x W)"
    assert any(f"timing candidates untrained at {shape}, on cpu" in line for line in messages)
    # report.md and report.html: the images timed, the fixed file's input, no "seq" anywhere
    markdown, html = (run / "report.md").read_text(), (run / "report.html").read_text()
    assert f"at {shape}, 1 thread(s)" in markdown
    assert "its shapes are fixed at batch 1 (pixel_values 1x1x8x8: it scores digits" in markdown
    assert not re.search(r"\bseq\b", markdown) and not re.search(r"\bseq\b", html)
    # the bundle's README: the latency's shape, no padding to a length
    readme = (run / "bundle" / "README.md").read_text()
    assert f"{shape}): p50 " in readme and not re.search(r"\bseq\b", readme) and "padded" not in readme
    # the class names: the report's class list and slices, the bundle's labels.json and README, in class order
    assert "Task digits: classes, as the logits' columns: 0 zero, 1 one, 2 two, 3 three" in markdown
    assert {s["slice"] for s in data["gap"]["digits"]["slices"] if s["group"] == "class"} == set(DIGIT_NAMES)
    assert json.loads((run / "bundle" / "labels.json").read_text()) == {"digits": DIGIT_NAMES}
    assert "`labels.json`: digits: 0 zero, 1 one, 2 two" in readme
    # a report from before budget.image_shape (seq_len at the recipe's default) says images, not "seq 128"
    older = json.loads(json.dumps(data))
    older["budget"].pop("image_shape")
    older["budget"]["seq_len"] = 128
    assert "at batch 1, the task's images, 1 thread(s)" in render_markdown(older)
    assert not re.search(r"\bseq\b", render_markdown(older) + render_html(older))
    # had the student shipped: its first screen says end to end does not apply to images (not "not measured")
    student = next(row for row in data["files"] if row["student"] != "teacher")
    shipped = {**data, "selected": {**data["selected"], "name": student["name"], "onnx": student["onnx"]}}
    assert "End to end, tokenizer + model: not applicable to image inputs." in render_markdown(shipped)
