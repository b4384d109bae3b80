import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from edgekit import names
from edgekit.data import load_images
from edgekit.errors import DataError, InvalidModelFile, ModelNotFound, QuantizationFailed
from edgekit.runtime.quantize import (
    CONFIGS,
    METHODS,
    Fp16,
    Int8Dynamic,
    Int8Static,
    QuantConfig,
    WeightOnly,
    image_calibration,
    quant_config,
    quantize_file,
    reduce_range_choice,
    resolve_reduce_range,
    text_calibration,
)

SENTENCES = ["a funny and moving film", "the worst story of the year, too long and dull",
             "it is not good but not bad", "best movie"]


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _mean_pooled(session, tokenizer):
    encoded = tokenizer(SENTENCES, padding="longest", return_tensors="np")
    feed = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    hidden = session.run(["last_hidden_state"], feed)[0]
    mask = encoded["attention_mask"][..., None]
    return (hidden * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_file_is_smaller_loads_and_stays_close(tiny_bert, tiny_bert_onnx, tmp_path, monkeypatch, per_channel):
    # setup
    monkeypatch.chdir(tmp_path)
    dst = tmp_path / "int8" / "model.onnx"
    # execute
    method = "int8-dynamic" if per_channel else "int8-dynamic-per-tensor"
    record = quantize_file(tiny_bert_onnx, dst, method)
    # assert: the record says what was done
    assert record["method"] == method and record["weight_type"] == "int8"
    assert record["per_channel"] is per_channel
    # auto (the default) is this host's choice, computed from its detected instruction sets
    assert record["reduce_range_setting"] == "auto"
    assert (record["reduce_range"], record["why"]) == reduce_range_choice()
    assert record["size_bytes"] == dst.stat().st_size < tiny_bert_onnx.stat().st_size
    # assert: it loads and its mean-pooled embeddings match fp32
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    fp32, int8 = _mean_pooled(_session(tiny_bert_onnx), tokenizer), _mean_pooled(_session(dst), tokenizer)
    cosine = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.9
    # assert: no stray files in the cwd or beside dst
    assert os.listdir(tmp_path) == ["int8"]
    assert os.listdir(dst.parent) == ["model.onnx"]


# Simulated hosts, as environment.cpu_info reports them: the auto choice is tested on each kind of CPU,
# whatever this one is.
_SETS = {"avx2": True, "fma": True, "avx512f": False, "avx512bw": False, "avx512_vnni": False, "avx_vnni": False,
         "amx_int8": False}
HOSTS = {
    "x86-avx2": ({"name": "Zen 3", "arch": "x86_64", "logical_cores": 2, "instruction_sets": _SETS}, True),
    "x86-avx512-no-vnni": ({"name": "Skylake-SP", "arch": "x86_64", "logical_cores": 2,
                            "instruction_sets": {**_SETS, "avx512f": True, "avx512bw": True}}, True),
    "x86-avx512-vnni": ({"name": "Zen 4", "arch": "x86_64", "logical_cores": 2,
                         "instruction_sets": {**_SETS, "avx512f": True, "avx512bw": True, "avx512_vnni": True}},
                        False),
    "x86-avx-vnni": ({"name": "Alder Lake", "arch": "x86_64", "logical_cores": 2,
                      "instruction_sets": {**_SETS, "avx_vnni": True}}, False),
    "x86-amx": ({"name": "Sapphire Rapids", "arch": "x86_64", "logical_cores": 2,
                 "instruction_sets": {**_SETS, "amx_int8": True}}, False),
    "arm64": ({"name": "Graviton", "arch": "aarch64", "logical_cores": 2,
               "instruction_sets": {"neon": True, "dotprod": False}}, False),
}


def test_reduce_range_only_on_x86_without_vnni():
    # setup
    sets = {"avx2": True, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
    x86 = {"arch": "x86_64", "instruction_sets": sets}
    # execute / assert
    assert reduce_range_choice(x86)[0] is True
    assert reduce_range_choice({**x86, "instruction_sets": {**sets, "avx512_vnni": True}})[0] is False
    assert reduce_range_choice({**x86, "instruction_sets": {**sets, "avx_vnni": True}})[0] is False
    assert reduce_range_choice({"arch": "aarch64", "instruction_sets": {"dotprod": False}})[0] is False
    assert "VNNI" in reduce_range_choice(x86)[1]


@pytest.mark.parametrize("host", HOSTS)
def test_auto_is_the_hosts_choice_and_a_pin_wins_on_every_host(host):
    # setup
    info, seven_bits = HOSTS[host]
    # execute / assert: auto (or None) follows the CPU; True/False are used as given, and say what auto would do
    assert resolve_reduce_range("auto", info) == ("auto", seven_bits, reduce_range_choice(info)[1])
    assert resolve_reduce_range(None, info) == resolve_reduce_range("auto", info)
    for pinned in (True, False):
        setting, used, why = resolve_reduce_range(pinned, info)
        assert (setting, used) == (pinned, pinned)
        assert why.startswith(f"pinned to {pinned}") and f"auto would pick {seven_bits} here" in why


@pytest.mark.parametrize("setting", [1, "on", "true", 0.0])
def test_a_reduce_range_that_is_not_auto_or_a_bool_is_refused(tiny_bert_onnx, tmp_path, setting):
    with pytest.raises(QuantizationFailed, match="'auto', True or False"):
        quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", "int8-dynamic", reduce_range=setting)
    assert os.listdir(tmp_path) == []


def test_the_recipe_setting_is_auto_or_a_bool_and_says_why():
    # setup
    import yaml
    from pydantic import ValidationError

    from edgekit.recipe import QuantizeSpec

    # execute / assert: auto by default; YAML's true/false (and on/off) pin it; anything else is refused
    assert QuantizeSpec().reduce_range == "auto"
    assert [QuantizeSpec(**yaml.safe_load(f"reduce_range: {v}")).reduce_range for v in ("auto", "true", "off")] == [
        "auto", True, False]
    with pytest.raises(ValidationError, match="reduce_range"):
        QuantizeSpec(reduce_range="maybe")
    described = QuantizeSpec.model_json_schema()["properties"]["reduce_range"]["description"]
    assert "vpmaddubsw" in described and "VNNI" in described and "arm64" in described


def _largest_int8_weight(path):
    """max |w| over the file's int8 weights (MatMul and Gather initializers, zero points excluded)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    return max(int(np.abs(numpy_helper.to_array(init).astype(np.int32)).max())
               for init in onnx.load(str(path)).graph.initializer
               if init.data_type == TensorProto.INT8 and len(init.dims) == 2)


@pytest.mark.parametrize("host", ["x86-avx2", "x86-avx512-vnni", "arm64"])
@pytest.mark.parametrize("setting", ["auto", True, False])
@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static-minmax"])
def test_the_reduce_range_asked_is_recorded_and_is_what_the_weights_use(tiny_bert_onnx, tokenizer, tmp_path,
                                                                       monkeypatch, method, setting, host):
    # setup: a simulated CPU, which only the auto setting reads
    info, seven_bits = HOSTS[host]
    monkeypatch.setattr("edgekit.runtime.environment.cpu_info", lambda: info)
    monkeypatch.chdir(tmp_path)
    calibration = text_calibration(tokenizer, CALIBRATION_TEXTS, samples=4, max_length=32)
    # execute
    record = quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", method, calibration, reduce_range=setting)
    # assert: what was asked, what was used, why; 7-bit weights span [-64, 64], full 8-bit ones reach 127
    used = seven_bits if setting == "auto" else setting
    assert (record["reduce_range_setting"], record["reduce_range"]) == (setting, used)
    assert record["why"] == resolve_reduce_range(setting, info)[2]
    largest = _largest_int8_weight(tmp_path / "q.onnx")
    assert largest <= 64 if used else largest == 127


def test_failure_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "broken.onnx"
    src.write_bytes(b"not an onnx file")
    dst = tmp_path / "out" / "model.onnx"
    # execute
    with pytest.raises(InvalidModelFile) as err:
        quantize_file(src, dst, "int8-dynamic")
    # assert
    assert "broken.onnx" in str(err.value) and "truncated or corrupt" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["broken.onnx", "out"]
    assert os.listdir(dst.parent) == []


def test_missing_source_is_model_not_found(tmp_path):
    # execute / assert
    with pytest.raises(ModelNotFound, match="edgekit export"):
        quantize_file(tmp_path / "nope.onnx", tmp_path / "q.onnx", "int8-dynamic")


# --- every method, calibration feeds, the CLI ------------------------------------------------------------------

CALIBRATION_TEXTS = ["a great and funny film", "too long", "the story of a boy and his dog, told with love",
                     "not the worst movie of the year but close", "boring", "it is good", "we love this one",
                     "what a dull story about nothing at all, from the start to the very end"]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def fp32_pooled(tiny_bert_onnx, tokenizer):
    return _mean_pooled(_session(tiny_bert_onnx), tokenizer)


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_loadable_file_close_to_fp32(tiny_bert_onnx, tokenizer, fp32_pooled, tmp_path,
                                                           monkeypatch, method):
    # setup
    monkeypatch.chdir(tmp_path)
    dst = tmp_path / "out" / "model.onnx"
    calibration = text_calibration(tokenizer, CALIBRATION_TEXTS, samples=8, max_length=64)
    config = CONFIGS[method]
    # execute
    record = quantize_file(tiny_bert_onnx, dst, method, calibration)
    # assert: the record is JSON-able and says what was done
    assert json.loads(json.dumps(record)) == record
    assert record["method"] == method and record["size_bytes"] == dst.stat().st_size and record["seconds"] >= 0
    static = config.needs_calibration
    if isinstance(config, WeightOnly):  # block-wise weights, float activations: reduce_range does not apply
        assert (record["weight_type"], record["activation_type"], record["calibration"]) == (
            f"int{config.bits}", "float", None)
        assert (record["reduce_range"], record["per_channel"], record["op_types"]) == (None, None, ["MatMul"])
        assert dst.stat().st_size < tiny_bert_onnx.stat().st_size
    elif not config.int8:
        assert (record["weight_type"], record["activation_type"], record["calibration"]) == ("fp16", "fp16", None)
    else:
        assert record["weight_type"] == "int8" and (record["reduce_range"], record["why"]) == reduce_range_choice()
        assert record["reduce_range_setting"] == "auto"
        assert record["activation_type"] == ("uint8" if static else "dynamic")
        assert record["per_channel"] is (method != "int8-dynamic-per-tensor")
        assert dst.stat().st_size < tiny_bert_onnx.stat().st_size
    if static:
        assert record["op_types"] == ["MatMul"]
        assert record["calibration"]["method"] == config.calibrate and record["calibration"]["batches"] == 8
    # assert: inputs/outputs keep their types, and embeddings on real sentences stay close to fp32. The tiny random
    # model's residual stream dominates its output, so int8 stays far closer than a real model's ~0.93-0.99.
    session = _session(dst)
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)"] * 3
    assert session.get_outputs()[0].type == "tensor(float)"
    pooled = _mean_pooled(session, tokenizer)
    if not config.int8:  # fp16, and weight-only (activations float): only the weights' rounding
        assert np.abs(pooled - fp32_pooled).max() < 1e-2 and _cosine(fp32_pooled, pooled).min() > 0.9999
    else:
        assert _cosine(fp32_pooled, pooled).min() > 0.99
    # assert: nothing but dst is left in the cwd or beside dst
    assert os.listdir(tmp_path) == ["out"] and os.listdir(dst.parent) == ["model.onnx"]


@pytest.mark.parametrize("calibration", [None, []])
def test_static_without_calibration_names_the_fix(tiny_bert_onnx, tmp_path, monkeypatch, calibration):
    # setup
    monkeypatch.chdir(tmp_path)
    # execute
    with pytest.raises(QuantizationFailed) as err:
        quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", "int8-static-minmax", calibration)
    # assert
    assert "int8-static-minmax" in str(err.value) and "--calibration DATA" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_unknown_method_lists_the_choices(tiny_bert_onnx, tmp_path):
    with pytest.raises(QuantizationFailed, match="int8-static-entropy"):
        quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", "int4")


def test_the_name_table_has_a_config_for_every_method_name():
    # assert: the YAML names, in names.METHODS' order, each the name of its own config
    assert tuple(CONFIGS) == names.METHODS == METHODS
    assert all(isinstance(config, QuantConfig) and config.name == name for name, config in CONFIGS.items())
    assert tuple(name for name, config in CONFIGS.items() if config.needs_calibration) == names.STATIC_METHODS


def test_configs_say_what_each_variant_is():
    # assert: (int8, needs_calibration, gpu_only, graph) of each; static ones share one graph
    facts = {name: (c.int8, c.needs_calibration, c.gpu_only, c.graph) for name, c in CONFIGS.items()}
    assert facts == {"int8-dynamic": (True, False, False, "int8-dynamic"),
                     "int8-dynamic-per-tensor": (True, False, False, "int8-dynamic-per-tensor"),
                     "int8-static-minmax": (True, True, False, "int8-static"),
                     "int8-static-entropy": (True, True, False, "int8-static"),
                     "int8-static-percentile": (True, True, False, "int8-static"),
                     "fp16": (False, False, True, "fp16"),
                     "int4-weight": (False, False, False, "int4-weight"),
                     "int8-weight": (False, False, False, "int8-weight")}
    # assert: configs are values: built ones equal (and hash like) the table's, and cannot change
    assert Int8Dynamic(per_channel=False) == CONFIGS["int8-dynamic-per-tensor"]
    assert {Int8Static("entropy"): 1}[CONFIGS["int8-static-entropy"]] == 1 and Fp16() == CONFIGS["fp16"]
    with pytest.raises(AttributeError):
        CONFIGS["int8-dynamic"].per_channel = False


def test_quant_config_takes_a_name_or_a_config_and_names_the_choices():
    # assert
    assert quant_config("int8-static-percentile") == Int8Static(calibrate="percentile")
    assert quant_config(Int8Dynamic()) is not None and quant_config(Int8Dynamic()).name == "int8-dynamic"
    for wrong in ("int4", None, ["fp16"]):
        with pytest.raises(QuantizationFailed, match="choose one of: int8-dynamic, int8-dynamic-per-tensor"):
            quant_config(wrong)
    with pytest.raises(QuantizationFailed, match="minmax, entropy, percentile"):
        Int8Static("kl")


def test_a_config_writes_the_same_file_and_record_as_its_name(tiny_bert_onnx, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    # execute
    by_name = quantize_file(tiny_bert_onnx, tmp_path / "name.onnx", "int8-dynamic-per-tensor", reduce_range=False)
    by_config = quantize_file(tiny_bert_onnx, tmp_path / "config.onnx", Int8Dynamic(per_channel=False),
                              reduce_range=False)
    # assert
    assert json.dumps({**by_name, "seconds": 0}) == json.dumps({**by_config, "seconds": 0})
    assert (tmp_path / "name.onnx").read_bytes() == (tmp_path / "config.onnx").read_bytes()


def test_quantize_does_not_load_numpy_or_the_evaluation_stage():
    # execute: a fresh interpreter
    code = ("import sys, edgekit.runtime.quantize; "
            "print([m for m in ('numpy', 'onnx', 'onnxruntime', 'edgekit.runtime.evaluate') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # assert
    assert out.stdout.strip() == "[]"


def test_calibration_of_the_wrong_kind_names_the_missing_inputs(tiny_bert_onnx, tmp_path, monkeypatch):
    # setup: images for a text model
    monkeypatch.chdir(tmp_path)
    calibration = image_calibration(np.zeros((4, 3, 8, 8), dtype=np.float32), samples=4)
    # execute / assert
    with pytest.raises(QuantizationFailed, match="input_ids") as err:
        quantize_file(tiny_bert_onnx, tmp_path / "out" / "q.onnx", "int8-static-entropy", calibration)
    assert "pixel_values" in str(err.value)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == []


def test_ragged_hand_made_feeds_are_padded_for_percentile(tiny_bert_onnx, tokenizer, tmp_path, monkeypatch):
    # setup: one batch per text, each at its own length (percentile calibration raised "inhomogeneous shape")
    monkeypatch.chdir(tmp_path)
    calibration = [{k: v.astype(np.int64) for k, v in tokenizer([t], return_tensors="np").items()}
                   for t in CALIBRATION_TEXTS[:6]]
    assert len({feed["input_ids"].shape for feed in calibration}) > 1
    # execute
    record = quantize_file(tiny_bert_onnx, tmp_path / "q.onnx", "int8-static-percentile", calibration)
    # assert
    assert record["calibration"] == {"method": "percentile", "batches": 6, "percentile": 99.999}
    _session(tmp_path / "q.onnx")


def test_text_calibration_pads_a_seeded_sample_to_one_length(tokenizer):
    # execute
    feeds = text_calibration(tokenizer, CALIBRATION_TEXTS, samples=5, max_length=64, seed=3)
    again = text_calibration(tokenizer, CALIBRATION_TEXTS, samples=5, max_length=64, seed=3)
    capped = text_calibration(tokenizer, CALIBRATION_TEXTS, samples=100, max_length=6)
    # assert: batch 1 each, int64, one length = the longest sampled text
    assert len(feeds) == 5 and all(set(f) == {"input_ids", "attention_mask", "token_type_ids"} for f in feeds)
    assert {v.shape for f in feeds for v in f.values()} == {(1, max(int(f["attention_mask"].sum()) for f in feeds))}
    assert all(v.dtype == np.int64 for f in feeds for v in f.values())
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(feeds, again, strict=True) for k in a)
    # assert: fewer texts than samples gives all of them; max_length caps the length
    assert len(capped) == len(CALIBRATION_TEXTS) and {f["input_ids"].shape for f in capped} == {(1, 6)}


def test_image_calibration_is_a_seeded_sample_of_single_images():
    # setup
    images = np.arange(10 * 3 * 4 * 4, dtype=np.float64).reshape(10, 3, 4, 4)
    # execute
    feeds = image_calibration(images, samples=4, seed=1)
    # assert
    assert len(feeds) == 4 and all(set(f) == {"pixel_values"} for f in feeds)
    assert {(f["pixel_values"].shape, f["pixel_values"].dtype) for f in feeds} == {((1, 3, 4, 4), np.dtype(np.float32))}
    assert len(image_calibration(images, samples=50)) == 10
    with pytest.raises(DataError, match="N, C, H, W"):
        image_calibration(images[0], samples=4)


def test_calibration_images_from_an_npz(tmp_path):
    # setup: task data stores (N, H, W) images beside labels; a bare archive without 'images' is ambiguous
    np.savez(tmp_path / "task.npz", images=np.ones((5, 8, 8), dtype=np.uint8), labels=np.arange(5))
    np.savez(tmp_path / "two.npz", a=np.ones((2, 1, 4, 4)), b=np.ones(2))
    # execute
    images = load_images(str(tmp_path / "task.npz"))
    # assert
    assert images.shape == (5, 1, 8, 8) and images.dtype == np.float32
    with pytest.raises(DataError, match="images="):
        load_images(str(tmp_path / "two.npz"))


def test_cli_static_quantization_from_a_text_file(run_cli, model_copy, tiny_bert, tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(CALIBRATION_TEXTS) + "\n", encoding="utf-8")
    dst = model_copy.with_name("model.int8-static-minmax.onnx")
    args = ("quantize", model_copy, "--method", "int8-static-minmax", "--calibration", texts, "--samples", 4,
            "--tokenizer", tiny_bert)
    # execute
    result = run_cli(*args)
    again = run_cli(*args)
    forced = run_cli(*args, "--force")
    # assert: one line naming the file, the sizes and the calibration
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and str(dst) in result.output
    assert " MB -> " in result.output and "calibration minmax on 4 samples" in result.output
    _session(dst)
    # assert: an existing output is kept unless --force
    assert again.exit_code == 1 and "--force" in again.output
    assert forced.exit_code == 0, forced.output
    assert sorted(os.listdir(model_copy.parent)) == ["model.int8-static-minmax.onnx", "model.onnx"]
    assert sorted(os.listdir(tmp_path)) == ["m", "texts.txt"]


def test_cli_static_without_calibration_names_the_option(run_cli, model_copy):
    # execute
    result = run_cli("quantize", model_copy, "--method", "int8-static-entropy")
    # assert
    assert result.exit_code == 1 and "--calibration DATA" in result.output
    assert "Traceback" not in result.output and os.listdir(model_copy.parent) == ["model.onnx"]


def test_cli_text_calibration_without_a_tokenizer_names_the_option(run_cli, model_copy):
    # execute
    result = run_cli("quantize", model_copy, "--method", "int8-static-minmax", "--calibration", "rotten_tomatoes")
    # assert
    assert result.exit_code == 1 and "--tokenizer" in result.output


def test_cli_dynamic_needs_no_data_and_takes_an_output_path(run_cli, model_copy, tmp_path):
    # execute
    result = run_cli("quantize", model_copy, "--method", "int8-dynamic", "-o", tmp_path / "q" / "int8.onnx")
    # assert
    assert result.exit_code == 0, result.output
    assert "weights int8 per-channel, activations dynamic" in result.output
    assert f"reduce_range {reduce_range_choice()[0]} (auto)" in result.output
    _session(tmp_path / "q" / "int8.onnx")


@pytest.mark.parametrize(("option", "seven_bits"), [("on", True), ("off", False)])
def test_cli_reduce_range_pins_the_weight_width(run_cli, model_copy, tmp_path, option, seven_bits):
    # execute
    result = run_cli("quantize", model_copy, "--method", "int8-dynamic", "--reduce-range", option,
                     "-o", tmp_path / "q.onnx")
    # assert: the same file on any host, and the line says it was pinned
    assert result.exit_code == 0, result.output
    assert f"reduce_range {seven_bits} (pinned)" in result.output
    largest = _largest_int8_weight(tmp_path / "q.onnx")
    assert largest <= 64 if seven_bits else largest == 127
    assert run_cli("quantize", model_copy, "--method", "int8-dynamic", "--reduce-range", "7").exit_code == 2
