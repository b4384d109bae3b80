import os

import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from edgekit.errors import ModelNotFound, QuantizationFailed
from edgekit.quantize import quantize_dynamic_int8, reduce_range_choice

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
    record = quantize_dynamic_int8(tiny_bert_onnx, dst, per_channel=per_channel)
    # assert: the record says what was done
    assert record["method"] == "dynamic-int8" and record["weight_type"] == "int8"
    assert record["per_channel"] is per_channel
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


def test_failure_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    # setup
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "broken.onnx"
    src.write_bytes(b"not an onnx file")
    dst = tmp_path / "out" / "model.onnx"
    # execute
    with pytest.raises(QuantizationFailed) as err:
        quantize_dynamic_int8(src, dst)
    # assert
    assert "broken.onnx" in str(err.value) and "per_channel=False" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["broken.onnx", "out"]
    assert os.listdir(dst.parent) == []


def test_missing_source_is_model_not_found(tmp_path):
    # execute / assert
    with pytest.raises(ModelNotFound, match="edgekit export"):
        quantize_dynamic_int8(tmp_path / "nope.onnx", tmp_path / "q.onnx")
