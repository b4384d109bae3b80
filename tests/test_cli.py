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
