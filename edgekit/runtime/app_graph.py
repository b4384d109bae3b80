"""An app-ready graph: the bundle's model with its tokenizer inside (onnxruntime-extensions' BertTokenizer op).

    text (string, [batch]) -> embedding / <task>_logits, the same outputs as model.onnx

An app feeds a batch of texts and reads the outputs: no tokenizer library, no padding code. What it takes:
- WordPiece (BERT-style) tokenizers, from their tokenizer.json: model WordPiece, BertNormalizer,
  BertPreTokenizer, one special token before and after the text (BERT, DistilBERT, MiniLM, ELECTRA, bge,
  e5, MPNet's <s> ... </s> all have this shape). Anything else falls back (no app graph, the reason in the
  manifest): byte-level BPE (RoBERTa, GPT-2), Unigram/SentencePiece (XLM-R, CamemBERT, T5, DeBERTa-v3).
  onnxruntime-extensions has other ops for those (GPT2Tokenizer/RobertaTokenizer from a slow tokenizer's
  vocab and merges, SentencepieceTokenizer from the sentencepiece .model file); edgekit does not build them.
- Batches of any size >= 1. The BertTokenizer op takes one text per call (two are a pair), so the graph
  runs it in a Loop, one text per iteration, pads each to max_length and cuts the batch to its longest
  text: the same ids and mask as the separate tokenizer with padding="longest", truncation at max_length.
  An empty batch is an ONNX Runtime error (the model's reshapes take no zero-length batch).

Known differences of the op from tokenizer.json (measured with onnxruntime-extensions 0.15.2; the bundle
checks its real texts and PROBE_TEXTS exactly, and refuses to ship a graph that differs on one of them):
a word with an out-of-vocabulary character inside it ("ab€cd" with a vocabulary without €) is one [UNK]
for tokenizer.json and the pieces before that character plus [UNK] for the op; a NUL character ends the
text for the op; literal special-token strings in a text ("[CLS]") are special tokens for tokenizer.json
and plain text for the op; a few Unicode case mappings (Turkish dotted I) differ. On the 18,986 texts of
edgekit's built-in data sets the op matches all-MiniLM-L6-v2's tokenizer.json on every text.

No .ort file is made of it: ONNX Runtime Mobile runs the extensions' custom ops only when built with them.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import ProviderUnavailable
from edgekit.names import TEXT_INPUTS
from edgekit.runtime.providers import CONTRIB_DOMAIN, EXTENSIONS_FIX, provider_name

APP_FILE = "model.app.onnx"
TEXT_INPUT = "text"
PREFIX = "tokenizer/"  # the name of every node and tensor the tokenizer adds (tokenizer_model finds them so)
NO_ORT = ("no .ort file of the app graph: a reduced ONNX Runtime Mobile build (what .ort files are for) runs "
          "onnxruntime-extensions' custom operators only when built with them (build.py --use_extensions); on a "
          "phone, use model.ort and tokenize in the app, or load the app graph with a full ONNX Runtime package "
          "and the platform's onnxruntime-extensions package registered")
# Texts every app graph must tokenize exactly as tokenizer.json does, beside the bundle's real texts:
# accents, punctuation, casing, whitespace, words that are not in the vocabulary (built from known pieces, or
# wholly unknown characters), a word over WordPiece's 100-character limit, and texts longer than max_length.
PROBE_TEXTS = (
    "Café naïve résumé, Ångström and façade: déjà vu.",
    "Wait... what?! (Yes) -- \"quoted\", 'single'; a/b & c: 50% off #1 @home.",
    "SHOUTING Loudly and MiXeD case",
    "tabs\tand\nnew lines  and   runs of spaces",
    "zxqvbn flibbertigibbet qwertyuiop 12345xyz",
    "東京 😀 ☃ ❤",
    "x" * 120 + " after a word too long for WordPiece",
    "a",
    " ".join(["a long text that the tokenizer must cut at the teacher's max_length"] * 30),
)


def extensions_version() -> str | None:
    """onnxruntime-extensions' version, or None when its custom-op library is not installed (read from the
    package's metadata: importing it imports transformers)."""
    from importlib.metadata import PackageNotFoundError, version

    from edgekit.runtime.providers import extensions_library

    if extensions_library() is None:
        return None
    try:
        return version("onnxruntime-extensions")
    except PackageNotFoundError:  # the library without its metadata (a vendored copy)
        return "unknown"


# ---------------------------------------------------------------------------- what the tokenizer is

def bert_tokenizer_attributes(folder: Path, max_length: int) -> tuple[dict | None, str | None]:
    """(the BertTokenizer op's attributes, None) for the tokenizer in `folder`, or (None, why it cannot be
    put in the graph). Read from tokenizer.json, which is what the separate tokenizer runs."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None, (f"the tokenizer has no tokenizer.json (a slow, Python-only tokenizer) in {folder}; the app "
                      "graph is built from a fast tokenizer's tokenizer.json")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
    pre, post = spec.get("pre_tokenizer") or {}, spec.get("post_processor") or {}
    other = ("onnxruntime-extensions' BertTokenizer op takes WordPiece (BERT-style) tokenizers only; byte-level "
             "BPE (RoBERTa, GPT-2) and Unigram/SentencePiece (XLM-R, T5) tokenizers need its other ops, which "
             "edgekit does not build")
    if model.get("type") != "WordPiece":
        return None, f"the tokenizer is {model.get('type')}, not WordPiece: {other}"
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        return None, (f"the tokenizer's normalizer is {normalizer.get('type')} (clean_text "
                      f"{normalizer.get('clean_text')}), not BERT's: {other}")
    if pre.get("type") != "BertPreTokenizer":
        return None, f"the tokenizer splits words with {pre.get('type')}, not BertPreTokenizer: {other}"
    specials = _wrapping_tokens(post)
    if specials is None:
        return None, ("the tokenizer's post-processor does not put exactly one special token before and after "
                      f"a text (it is {post.get('type')}); the BertTokenizer op adds only those")
    vocab = model.get("vocab") or {}
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))) or any("\n" in t or "\r" in t for t in tokens):
        return None, "the tokenizer's vocabulary ids are not 0..N-1 one token a line, as the op reads them"
    added = [t["content"] for t in spec.get("added_tokens", []) if not t.get("special")]
    if added:
        return None, (f"the tokenizer has {len(added)} added non-special token(s) ({', '.join(added[:3])}) that "
                      "it splits out of texts before WordPiece; the op does not")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("truncation_side", "right") != "right":
        return None, "the tokenizer truncates texts on the left; the op keeps a text's start"
    if model.get("max_input_chars_per_word", 100) != 100 or model.get("continuing_subword_prefix", "##") != "##":
        return None, "the tokenizer's WordPiece settings (word length limit, ## prefix) differ from the op's"
    unk = model.get("unk_token", "[UNK]")
    cls, sep = specials
    pad = config.get("pad_token") or (spec.get("padding") or {}).get("pad_token") or "[PAD]"
    mask = config.get("mask_token")
    missing = [t for t in (unk, cls, sep, pad) if t not in vocab]
    if missing:
        return None, f"the tokenizer's special token(s) {missing} are not in its vocabulary"
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    return {
        "vocab_file": "\n".join(tokens),
        "do_lower_case": int(lowercase),
        # tokenizer.json's strip_accents null means "as lowercase" (BERT's rule); the extensions' own converter
        # (gen_processing_models) reads it as false, and then every accented word differs.
        "strip_accents": int(lowercase if strip is None else bool(strip)),
        "tokenize_chinese_chars": int(bool(normalizer.get("handle_chinese_chars", True))),
        "unk_token": unk, "cls_token": cls, "sep_token": sep, "pad_token": pad,
        # The op looks the mask token up (and fails without one) but never emits it for plain text.
        "mask_token": mask if isinstance(mask, str) and mask in vocab else unk,
        "suffix_indicator": "##",
        "max_length": int(max_length),
    }, None


def _wrapping_tokens(post: dict) -> tuple[str, str] | None:
    """(token before, token after) a single text, from a post-processor that adds exactly those."""
    kind = post.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return post["cls"][0], post["sep"][0]
    if kind == "TemplateProcessing":
        single = post.get("single") or []
        if (len(single) == 3 and "SpecialToken" in single[0] and "Sequence" in single[1]
                and "SpecialToken" in single[2] and all(next(iter(p.values())).get("type_id", 0) == 0 for p in single)):
            return single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
    return None


def why_not(folder: Path | None, model_inputs: list[str], max_length: int) -> str | None:
    """Why no app graph can be built (no tokenizer, other inputs, the package, the tokenizer), or None."""
    if folder is None:
        return "an image model has no tokenizer to put in the graph"
    other = [name for name in model_inputs if name not in TEXT_INPUTS]
    if other:
        return f"the model takes {other} besides what a tokenizer produces ({', '.join(TEXT_INPUTS)})"
    if extensions_version() is None:
        return f"onnxruntime-extensions is not installed; {EXTENSIONS_FIX}"
    return bert_tokenizer_attributes(folder, max_length)[1]


# ---------------------------------------------------------------------------- the graph

def _tokenizer_nodes(attributes: dict, max_length: int, wanted: dict[str, int]) -> list:
    """The nodes that turn TEXT_INPUT (string, [batch]) into the model's inputs named in `wanted`
    ({name: onnx element type}), each (batch, longest) and padded as the separate tokenizer pads."""
    from onnx import TensorProto, helper

    def name(x: str) -> str:
        return PREFIX + x

    def const(x: str, values, dtype=TensorProto.INT64, dims=None) -> object:
        return helper.make_node("Constant", [], [name(x)], name=name(x),
                                value=helper.make_tensor(name(x), dtype, [len(values)] if dims is None else dims,
                                                         values))

    pad_id = attributes["vocab_file"].split("\n").index(attributes["pad_token"])
    # Loop body: one text -> its ids, mask and segments, each padded to max_length, and its length.
    body_nodes = [
        const("body/one", [1]), const("body/zero", [0]), const("body/max_length", [max_length]),
        const("body/pad_id", [pad_id], dims=[]), const("body/pad_zero", [0], dims=[]),
        helper.make_node("Unsqueeze", [name("body/i"), name("body/zero")], [name("body/start")],
                         name=name("body/start")),
        helper.make_node("Add", [name("body/start"), name("body/one")], [name("body/end")], name=name("body/end")),
        helper.make_node("Slice", [TEXT_INPUT, name("body/start"), name("body/end")], [name("body/text")],
                         name=name("body/text")),
        helper.make_node("BertTokenizer", [name("body/text")],
                         [name("body/ids"), name("body/types"), name("body/mask")],
                         name=name("BertTokenizer"), domain=CONTRIB_DOMAIN, **attributes),
        helper.make_node("Shape", [name("body/ids")], [name("body/length")], name=name("body/length")),
        helper.make_node("Sub", [name("body/max_length"), name("body/length")], [name("body/short")],
                         name=name("body/short")),
        helper.make_node("Concat", [name("body/zero"), name("body/short")], [name("body/pads")], axis=0,
                         name=name("body/pads")),
        helper.make_node("Pad", [name("body/ids"), name("body/pads"), name("body/pad_id")],
                         [name("body/ids_padded")], name=name("body/ids_padded")),
        helper.make_node("Pad", [name("body/mask"), name("body/pads"), name("body/pad_zero")],
                         [name("body/mask_padded")], name=name("body/mask_padded")),
        helper.make_node("Pad", [name("body/types"), name("body/pads"), name("body/pad_zero")],
                         [name("body/types_padded")], name=name("body/types_padded")),
        helper.make_node("Identity", [name("body/cond_in")], [name("body/cond_out")], name=name("body/cond_out")),
    ]
    int64 = TensorProto.INT64
    body = helper.make_graph(
        body_nodes, name("loop_body"),
        [helper.make_tensor_value_info(name("body/i"), int64, []),
         helper.make_tensor_value_info(name("body/cond_in"), TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(name("body/cond_out"), TensorProto.BOOL, []),
         *[helper.make_tensor_value_info(name(f"body/{x}_padded"), int64, [max_length])
           for x in ("ids", "mask", "types")],
         helper.make_tensor_value_info(name("body/length"), int64, [1])])
    nodes = [
        helper.make_node("Shape", [TEXT_INPUT], [name("batch")], name=name("batch")),
        helper.make_node("Squeeze", [name("batch")], [name("trips")], name=name("trips")),
        helper.make_node("Constant", [], [name("true")], name=name("true"),
                         value=helper.make_tensor(name("true"), TensorProto.BOOL, [], [True])),
        # Scan outputs: (batch, max_length) each, and (batch, 1) lengths.
        helper.make_node("Loop", [name("trips"), name("true")],
                         [name("ids_all"), name("mask_all"), name("types_all"), name("lengths")],
                         name=name("loop"), body=body),
        helper.make_node("ReduceMax", [name("lengths")], [name("longest_2d")], keepdims=1, name=name("longest_2d")),
        const("flat", [1]), const("zero", [0]), const("one", [1]),
        helper.make_node("Reshape", [name("longest_2d"), name("flat")], [name("longest")], name=name("longest")),
    ]
    columns = {"input_ids": "ids_all", "attention_mask": "mask_all", "token_type_ids": "types_all"}
    for model_input, dtype in wanted.items():
        cut = name(f"{model_input}_int64") if dtype != int64 else model_input
        nodes.append(helper.make_node("Slice", [name(columns[model_input]), name("zero"), name("longest"),
                                                name("one")], [cut], name=name(f"cut/{model_input}")))
        if dtype != int64:  # a graph that takes int32 ids
            nodes.append(helper.make_node("Cast", [cut], [model_input], to=dtype, name=name(f"cast/{model_input}")))
    return nodes


def build_app_graph(model_path: Path, tokenizer_folder: Path, max_length: int, out: Path) -> dict:
    """Write `out`: model_path's graph with the tokenizer of `tokenizer_folder` in front of it, taking
    TEXT_INPUT (string, [batch]); same outputs and metadata_props. Returns what it is (the manifest's record)."""
    import onnx
    from onnx import TensorProto, helper

    attributes, reason = bert_tokenizer_attributes(tokenizer_folder, max_length)
    if reason:
        raise ValueError(reason)  # why_not() said yes first; this is a bug, not a user error
    model = onnx.load(str(model_path))
    graph = model.graph
    taken = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    clash = sorted({t for n in graph.node for t in [*n.input, *n.output, n.name] if t.startswith(PREFIX)}
                   | ({TEXT_INPUT} & {t for n in graph.node for t in n.output}))
    if clash:
        raise ValueError(f"the model already names {clash[:3]}: rename them before building the app graph")
    nodes = _tokenizer_nodes(attributes, max_length, taken)
    text = helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])
    merged = helper.make_graph([*nodes, *graph.node], graph.name or "app", [text], list(graph.output),
                               initializer=list(graph.initializer), value_info=list(graph.value_info),
                               sparse_initializer=list(graph.sparse_initializer))
    app = helper.make_model(merged, opset_imports=[*model.opset_import, helper.make_opsetid(CONTRIB_DOMAIN, 1)],
                            ir_version=model.ir_version, producer_name="edgekit", functions=list(model.functions))
    app.metadata_props.extend(model.metadata_props)  # exactly model.onnx's: verify checks them against the manifest
    onnx.save(app, str(out))
    return {"file": out.name, "from": model_path.name,
            "input": {"name": TEXT_INPUT, "dtype": "string", "shape": ["batch"]},
            "tokenizer": {"op": f"{CONTRIB_DOMAIN}.BertTokenizer", "onnxruntime_extensions": extensions_version(),
                          "max_length": max_length, "padding": "longest text of the batch",
                          **{k: v for k, v in attributes.items() if k != "vocab_file"},
                          "vocab_size": attributes["vocab_file"].count("\n") + 1},
            "batch": ("any size >= 1 (one text per BertTokenizer call, in a Loop; padded to the longest text); "
                      "an empty batch fails"),
            "ort": NO_ORT}


def tokenizer_model(app_path: Path, outputs: list[str]):
    """The tokenizer part of an app graph as its own model: TEXT_INPUT -> `outputs` (model input names),
    so its token ids can be checked against tokenizer.json's, exactly, from the shipped file."""
    import onnx
    from onnx import TensorProto, helper

    app = onnx.load(str(app_path))
    nodes = [n for n in app.graph.node if n.name.startswith(PREFIX)]
    # The model's inputs are int64, or int32 through the Cast the builder added.
    types = {n.output[0]: next(a.i for a in n.attribute if a.name == "to") for n in nodes if n.op_type == "Cast"}
    text = helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])
    graph = helper.make_graph(nodes, "tokenizer", [text],
                              [helper.make_tensor_value_info(name, types.get(name, TensorProto.INT64),
                                                             ["batch", "sequence"]) for name in outputs])
    return helper.make_model(graph, opset_imports=list(app.opset_import), ir_version=app.ir_version)


def tokenizer_session(app_path: Path, outputs: list[str]):
    """An ONNX Runtime session (CPU, one thread) of tokenizer_model, written beside nothing: in memory."""
    import tempfile

    import onnx

    from edgekit.runtime.providers import SessionSettings, create_session

    with tempfile.TemporaryDirectory() as tmp:  # create_session takes a file, as every session edgekit makes
        path = Path(tmp) / "tokenizer.onnx"
        onnx.save(tokenizer_model(app_path, outputs), str(path))
        return create_session(path, SessionSettings(provider="cpu", threads=1))[0]


def text_array(texts: list[str]):
    """A batch of texts as the string tensor TEXT_INPUT takes (numpy unicode: saves in an .npz without pickle)."""
    import numpy as np

    return np.array(list(texts), dtype=np.str_)


def token_problems(session, batches: list[list[str]], expected: list[dict]) -> list[str]:
    """Every text whose ids (or segments) from the graph's tokenizer (`session` of tokenizer_session) differ
    from `expected` (the separate tokenizer's feeds of the same batches), named with both id lists; then any
    batch whose texts all agree but whose padding does not."""
    import numpy as np

    problems = []
    names = [o.name for o in session.get_outputs()]
    for index, (texts, want) in enumerate(zip(batches, expected)):
        got = dict(zip(names, session.run(None, {TEXT_INPUT: text_array(texts)})))
        for row, text in enumerate(texts):
            # Each text's own tokens (padding off), so one text that differs does not flag its batch-mates.
            if "attention_mask" in names:
                mine = {n: got[n][row][got["attention_mask"][row] == 1] for n in names}
                theirs = {n: want[n][row][want["attention_mask"][row] == 1] for n in names}
            else:
                mine, theirs = ({n: got[n][row] for n in names}, {n: want[n][row] for n in names})
            differ = [n for n in names if not np.array_equal(mine[n], theirs[n])]
            if differ:
                ids = "input_ids" if "input_ids" in names else differ[0]
                problems.append(f"{', '.join(differ)} differ on {text[:80]!r}{'...' if len(text) > 80 else ''}: "
                                f"tokenizer.json gives {theirs[ids].tolist()[:24]}, the graph "
                                f"{mine[ids].tolist()[:24]}")
        if not problems and any(not np.array_equal(got[n], want[n]) for n in names):
            problems.append(f"batch {index} of {len(texts)} texts: every text's tokens agree but the padded "
                            f"batch does not (shape {got[names[0]].shape} instead of {want[names[0]].shape})")
    return problems


# ---------------------------------------------------------------------------- latency

def app_graph_latency(folder: Path, recorded: dict, texts: list[str], max_length: int, batch: int) -> dict:
    """The app graph and the two-step path (tokenizer.json with the Rust tokenizers library, then model.onnx)
    timed text in -> outputs out the same way (edgekit.runtime.bench's end-to-end mode), with the session options
    and run counts the shipped file was timed with (`recorded`, a BenchConfig dump), on `texts`, at `batch`."""
    import tempfile

    from edgekit.runtime.bench import BenchConfig, run_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "texts.jsonl"
        source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                          encoding="utf-8")
        config = BenchConfig(**{**recorded, "end_to_end": True, "lengths_from": str(source), "text_column": "text",
                                "tokenizer": str(folder), "max_length": max_length, "batch": batch,
                                "seq_len": None, "dims": {}})
        moved = why_moved = None
        try:
            results = {name: run_benchmark(folder / name, config) for name in (APP_FILE, "model.onnx")}
        except ProviderUnavailable as e:
            if provider_name(config.provider) == "CPUExecutionProvider":
                raise
            # The extensions' string ops run on the CPU provider alone, and a provider that compiles whole graphs
            # may refuse the rest (OpenVINO: "Parameter operation with dynamic rank"): both paths on the CPU one.
            moved = f"{APP_FILE} does not start on {config.provider}, so both paths were timed on cpu"
            why_moved = str(e)
            config = config.model_copy(update={"provider": "cpu", "provider_options": {}, "engine_cache": None})
            results = {name: run_benchmark(folder / name, config) for name in (APP_FILE, "model.onnx")}
    keys = ("p50", "p95", "p99", "mean", "ci95")
    return {"app": {k: results[APP_FILE]["latency_ms"][k] for k in keys},
            "two_step": {k: results["model.onnx"]["latency_ms"][k] for k in keys},
            "two_step_tokenizer": results["model.onnx"]["inputs"]["tokenizer"],
            "provider": results[APP_FILE]["session"]["provider"], "threads": config.threads, "batch": batch,
            "texts": len(texts), "runs": len(results[APP_FILE]["samples_ms"]),
            "cpu": results[APP_FILE]["cpu"]["name"], "moved": moved, "why_moved": why_moved}
