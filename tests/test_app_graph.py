"""model.app.onnx (edgekit/runtime/app_graph.py): the tokenizer inside the graph, on the tiny teacher's real
WordPiece tokenizer. Bundles are written from the phone run's folder (tests/conftest.py) with
export.tokenizer_in_graph set in a copy of its report, as `edgekit bundle RUN NAME` writes them."""

import copy
import hashlib
import json
import shutil
import sys

import numpy as np
import onnx
import pytest

from edgekit.errors import BundleError, BundleMismatch, ExtensionsMissing
from edgekit.runtime.app_graph import (
    APP_FILE,
    PROBE_TEXTS,
    TEXT_INPUT,
    text_array,
    token_problems,
    tokenizer_session,
    why_not,
)
from edgekit.runtime.providers import CONTRIB_DOMAIN, SessionSettings, create_session, opset_domains
from edgekit.stages.bundle import MANIFEST, _dump_manifest, find_row, write_bundle
from edgekit.trust.verify import verify_bundle

MAX_LENGTH = 64  # tiny_recipe's teacher.max_length


def _app_data(phone_run) -> tuple[dict, dict]:
    """The phone run's report with an app graph asked for, and the file it picked; no fixed shapes, .ort or
    mobile check (write_bundle makes those the same with or without an app graph, test_bundle.py checks them)."""
    data = copy.deepcopy(phone_run.data)
    data["recipe"]["export"].update(shapes="dynamic", ort=False, mobile_check=False, tokenizer_in_graph=True)
    return data, find_row(data, data["selected"]["name"])


def _write(run, data, row, folder):
    folder.mkdir(parents=True)
    write_bundle(run, data, row, folder)
    return folder


@pytest.fixture(scope="module")
def app_bundle(phone_run, tmp_path_factory):
    data, row = _app_data(phone_run)
    return _write(phone_run.path, data, row, tmp_path_factory.mktemp("app") / "bundle")


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def _real_texts():
    """Real texts the tiny vocabulary covers: Rotten Tomatoes snippets and whole Lee documents (hundreds of
    tokens: truncated at max_length)."""
    from edgekit.data.builtin import lee_documents, rotten_tomatoes

    return [row["text"] for row in rotten_tomatoes()[:40]] + lee_documents()[:6]


def test_app_graph_gives_the_two_step_outputs_on_real_texts_including_truncated_ones(app_bundle):
    # setup: tokenizer.json + model.onnx, as the bundle's README tells an app to call them
    from transformers import AutoTokenizer

    from edgekit.runtime.feeds import text_feeds

    tokenizer = AutoTokenizer.from_pretrained(app_bundle)
    texts = _real_texts()
    model = create_session(app_bundle / "model.onnx")[0]
    app = create_session(app_bundle / APP_FILE)[0]
    names = tuple(i.name for i in model.get_inputs())
    untruncated = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    # execute: one text at a time, and batches of mixed lengths (padded to the longest of each)
    diffs, shapes = [], []
    for batch in [[t] for t in texts[::9]] + [texts[i:i + 8] for i in range(0, len(texts), 8)]:
        want = model.run(None, text_feeds(tokenizer, batch, MAX_LENGTH, names=names))
        got = app.run(None, {TEXT_INPUT: np.array(batch, dtype=object)})
        diffs += [float(np.abs(a - b).max()) for a, b in zip(want, got)]
        shapes.append([a.shape == b.shape for a, b in zip(want, got)])
    # assert
    assert max(untruncated) > MAX_LENGTH  # some texts were cut at max_length
    assert all(all(s) for s in shapes) and max(diffs) < 1e-5
    assert [i.name for i in app.get_inputs()] == [TEXT_INPUT] and app.get_inputs()[0].type == "tensor(string)"
    assert [o.name for o in app.get_outputs()] == [o.name for o in model.get_outputs()]


def test_the_graphs_tokenizer_gives_tokenizer_json_ids_exactly(app_bundle):
    # setup
    from transformers import AutoTokenizer

    from edgekit.runtime.feeds import text_feeds

    tokenizer = AutoTokenizer.from_pretrained(app_bundle)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    session = tokenizer_session(app_bundle / APP_FILE, names)
    batches = [_real_texts(), list(PROBE_TEXTS), [PROBE_TEXTS[-1]]]
    # execute
    problems = token_problems(session, batches, [text_feeds(tokenizer, b, MAX_LENGTH, names=tuple(names))
                                                 for b in batches])
    ids = session.run(None, {TEXT_INPUT: text_array([PROBE_TEXTS[-1]])})[0]
    # assert: nothing differs, and the long probe text is cut at max_length with [SEP] last
    assert problems == []
    assert ids.shape == (1, MAX_LENGTH) and ids[0, -1] == tokenizer.sep_token_id


def test_the_bundle_records_the_check_the_latency_and_no_ort_file(app_bundle, run_cli):
    # setup
    manifest = _manifest(app_bundle)
    # execute
    result = run_cli("verify", app_bundle)
    # assert
    app = manifest["app"]
    assert app["file"] == APP_FILE and APP_FILE in manifest["files"]
    assert manifest["reference"]["models"][APP_FILE]["inputs"] == "text"
    assert app["verified"]["probe_texts"] == len(PROBE_TEXTS) and app["verified"]["texts"] > 0
    assert max(app["verified"]["outputs"]["max_abs_diff"].values()) < 1e-5
    latency = app["latency_ms"]
    assert latency["app"]["p50"] > 0 and latency["two_step"]["p50"] > 0 and latency["texts"] > 0
    assert "ort" not in {p.suffix.lstrip(".") for p in app_bundle.iterdir()} and "--use_extensions" in app["ort"]
    assert CONTRIB_DOMAIN in opset_domains(app_bundle / APP_FILE)
    assert CONTRIB_DOMAIN not in opset_domains(app_bundle / "model.onnx")
    readme = (app_bundle / "README.md").read_text()
    assert "register_custom_ops_library" in readme and f'"{TEXT_INPUT}": np.array(' in readme
    assert result.exit_code == 0, result.output
    assert "model.onnx, model.app.onnx reproduce the reference outputs" in result.output


def test_a_text_the_op_tokenizes_differently_stops_the_bundle_naming_it(phone_run, tmp_path):
    # setup: the run's real texts plus one with a character the tiny vocabulary lacks inside a word:
    # tokenizer.json makes the word one [UNK], the extensions' op keeps the pieces before it
    run = shutil.copytree(phone_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("bundle*"))
    texts = json.loads((run / "reference" / "texts.json").read_text(encoding="utf-8"))
    odd = "Heartwarming here, thanks to Petter Næss and his cast."
    (run / "reference" / "texts.json").write_text(json.dumps([odd, *texts]), encoding="utf-8")
    data, row = _app_data(phone_run)
    # execute
    with pytest.raises(BundleError) as error:
        _write(run, data, row, tmp_path / "bundle")
    # assert: the text is named, with both id lists, and the fix
    message = str(error.value)
    assert "Petter Næss" in message and "tokenizer.json gives [" in message and "the graph [" in message
    assert "export.tokenizer_in_graph: false" in message
    assert sum(odd[:40] in line for line in message.splitlines()) == 1  # that text only, not its batch-mates


def _bpe_tokenizer(folder, vocab_size: int):
    """A real BPE tokenizer (the model RoBERTa's and GPT-2's use; split on whitespace rather than bytes, so
    its vocabulary fits the tiny model's table), trained here on a few hundred snippets."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgekit.data.builtin import rotten_tomatoes

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.train_from_iterator([row["text"] for row in rotten_tomatoes()[:300]], trainer)
    assert bpe.get_vocab_size() <= vocab_size
    shutil.rmtree(folder)
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", model_max_length=MAX_LENGTH).save_pretrained(folder)


def test_an_unsupported_tokenizer_ships_the_normal_bundle_saying_why(phone_run, tmp_path):
    # setup: the run with a BPE tokenizer in place of its WordPiece one (ids stay inside the tiny model's table)
    run = shutil.copytree(phone_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("bundle*"))
    vocab = json.loads((phone_run.path / "bundle" / "config.json").read_text())["vocab_size"]
    _bpe_tokenizer(run / "tokenizer", vocab_size=vocab)
    data, row = _app_data(phone_run)
    # execute
    folder = _write(run, data, row, tmp_path / "bundle")
    # assert: no app graph, the reason and the way out in the manifest and README, and the rest verifies
    app = _manifest(folder)["app"]
    assert app["file"] is None and not (folder / APP_FILE).exists()
    assert "BPE, not WordPiece" in app["reason"] and "BertTokenizer op takes WordPiece" in app["reason"]
    assert "tokenizer.json" in app["fix"]
    assert "## No app graph" in (folder / "README.md").read_text()
    assert verify_bundle(folder)["models"] == ["model.onnx"]


def test_other_reasons_for_no_app_graph_and_a_missing_package(app_bundle, monkeypatch):
    # setup: what a machine without onnxruntime-extensions sees (its import fails)
    inputs = ["input_ids", "attention_mask"]
    # execute
    image = why_not(None, ["pixel_values"], MAX_LENGTH)
    extra = why_not(app_bundle, ["input_ids", "position_ids"], MAX_LENGTH)
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)
    missing = why_not(app_bundle, inputs, MAX_LENGTH)
    with pytest.raises(ExtensionsMissing) as error:
        create_session(app_bundle / APP_FILE, SessionSettings())
    plain = create_session(app_bundle / "model.onnx", SessionSettings())[0]  # needs nothing more
    # assert
    assert image == "an image model has no tokenizer to put in the graph"
    assert "position_ids" in extra
    assert "pip install 'edgekit[app]'" in missing and "pip install 'edgekit[app]'" in str(error.value)
    assert plain.get_inputs()[0].name == "input_ids"


def _swap_vocab_lines(path, a: str, b: str):
    """The app graph with two tokens of its tokenizer's vocabulary swapped: ids change, shapes do not."""
    model = onnx.load(str(path))
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = next(a for a in loop.attribute if a.name == "body").g
    node = next(n for n in body.node if n.op_type == "BertTokenizer")
    vocab = next(x for x in node.attribute if x.name == "vocab_file")
    lines = vocab.s.decode().split("\n")
    i, j = lines.index(a), lines.index(b)
    lines[i], lines[j] = lines[j], lines[i]
    vocab.s = "\n".join(lines).encode()
    onnx.save(model, str(path))


def test_verify_catches_a_tampered_app_graph(app_bundle, tmp_path):
    # setup: a consistent manifest (hashes recomputed) over an app graph whose vocabulary was changed
    folder = shutil.copytree(app_bundle, tmp_path / "bundle")
    _swap_vocab_lines(folder / APP_FILE, "the", "film")
    manifest = _manifest(folder)
    record = manifest["files"][APP_FILE]
    record["sha256"] = hashlib.sha256((folder / APP_FILE).read_bytes()).hexdigest()
    record["bytes"] = (folder / APP_FILE).stat().st_size
    manifest.pop("manifest_sha256")
    (folder / MANIFEST).write_bytes(_dump_manifest(manifest))
    # execute
    with pytest.raises(BundleMismatch) as error:
        verify_bundle(folder)
    # assert: only the app graph is at fault, through its token ids (texts with "the" named)
    lines = str(error.value).splitlines()[1:]
    assert lines and all(line.strip().startswith(f"{APP_FILE}: ") for line in lines)
    assert any("token ids: input_ids differ on '" in line for line in lines)


@pytest.mark.openvino
@pytest.mark.skipif("OpenVINOExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs the onnxruntime-openvino build (make test-openvino)")
def test_an_app_graph_the_provider_cannot_start_is_timed_on_cpu_with_both_paths_and_says_so(app_bundle):
    # setup: the shipped file's timing settings, as if it had been timed on OpenVINO
    from edgekit.runtime.app_graph import app_graph_latency
    from edgekit.runtime.bench import BenchConfig

    recorded = BenchConfig(provider="openvino", min_runs=5, min_seconds=0).model_dump()
    # execute
    latency = app_graph_latency(app_bundle, recorded, _real_texts()[:10], max_length=64, batch=1)
    # assert: OpenVINO refuses the string graph; both paths then ran on the CPU provider, and the record says why
    assert latency["provider"] == "CPUExecutionProvider"
    assert latency["moved"] == f"{APP_FILE} does not start on openvino, so both paths were timed on cpu"
    assert "OpenVINOExecutionProvider failed to start a session" in latency["why_moved"]
    assert latency["app"]["p50"] > 0 and latency["two_step"]["p50"] > 0
