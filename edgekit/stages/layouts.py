"""Folders inside a bundle in the layouts other tools load, each checked against the bundle's ONNX file.

edgekit's graph outputs the pooled (and maybe L2-normalized) `embedding`; the libraries a user already has want
their own layouts (export.layouts in the recipe, `edgekit bundle RUN NAME --layout NAME`):

- `hf/` (sentence-encoder transformer students, on request: it copies the model file): one folder for
  transformers.js (`pipeline('feature-extraction', ...)`, onnx/model.onnx for dtype 'fp32',
  onnx/model_quantized.onnx for 'q8') and sentence-transformers' ONNX backend (modules.json, 1_Pooling,
  2_Normalize; `model_kwargs={"file_name": ...}`). Both pool `last_hidden_state` themselves, so the folder's copy
  of the file also outputs that tensor: the token vectors edgekit's graph pools, found by what they compute
  (pooled as the student pools, they give `embedding`) and added as an output through an Identity.
- `model2vec/` (static students, by default): model2vec's StaticModel.from_pretrained folder (model.safetensors,
  tokenizer.json, config.json). Its table is the student's distinct rows (a pruned vocabulary keeps fewer rows
  than the tokenizer has ids) pushed through everything linear that follows the mean (projection, bias, linear
  Dense layers), with model2vec's `mapping` (token id -> row, the format of its vocabulary-quantized models);
  all read off the file itself, so an int8 file gives its own dequantized weights. The graph leaves the
  tokenizer's special tokens ([CLS], [SEP], [UNK], ...) out of its mean, as model2vec's encode leaves them out,
  and a bias after the mean folds into every row (the mean is over the same tokens), so model2vec's mean of
  rows, normalized, is the graph's embedding.
- `static-npy/` (static students, on request): the Firefox-style pair some runtimes load instead:
  tokenizer.json and embeddings.npy, one float32 row per token id (the full vocabulary).

Every layout is checked when written: its outputs on `texts`, computed as the library computes them, against
the file's `embedding`; a layout that does not reproduce it raises BundleError naming the file and why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgekit.errors import BundleError

HF = "hf"
MODEL2VEC = "model2vec"
STATIC_NPY = "static-npy"
LAYOUTS = (HF, MODEL2VEC, STATIC_NPY)  # recipe.ExportSpec.layouts' names
TOKEN_OUTPUT = "last_hidden_state"  # what transformers.js and optimum's ORTModelForFeatureExtraction read
TOLERANCE = {"float": 1e-4, "quantized": 2e-2}
CANDIDATE_NODES = 80  # how far back from `embedding` the pooled token tensor is looked for (graph nodes)
# transformers.js's dtype -> the file suffix it loads (its DEFAULT_DTYPE_SUFFIX_MAPPING), by edgekit variant prefix
_JS_DTYPES = (("fp32", "fp32", "model.onnx"), ("fp16", "fp16", "model_fp16.onnx"),
              ("int8", "q8", "model_quantized.onnx"), ("uint8", "q8", "model_quantized.onnx"),
              ("int4", "q4", "model_q4.onnx"))
# edgekit's pooling names (names.POOLING_MODES) -> sentence-transformers' Pooling flags and transformers.js's option
_ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
               "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
               "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
_JS_POOLING = {"mean": "mean", "cls": "cls"}  # transformers.js 4's 'last_token' reads the last position, padding or not


def applicable(static: bool, embedding: bool = True) -> list[str]:
    """The layouts a student can have: a static student's model2vec/ and static-npy/; a sentence-encoder
    transformer's hf/ (`embedding`: the file outputs a pooled embedding); none for other students."""
    if static:
        return [MODEL2VEC, STATIC_NPY]
    return [HF] if embedding else []


def resolve_layouts(asked, *, static: bool, embedding: bool = True) -> list[str]:
    """The layouts to write: `asked` is export.layouts ("auto", None or a list of names) or the CLI's --layout
    names. auto: model2vec for a static student, nothing for a transformer (hf/ copies the model file: on
    request). A name asked for that does not apply to the student raises BundleError naming what applies."""
    fits = applicable(static, embedding)
    if asked is None or asked == "auto":
        return [MODEL2VEC] if static else []
    if isinstance(asked, str):
        asked = [asked]
    names = list(dict.fromkeys(asked))
    unknown = [name for name in names if name not in LAYOUTS]
    if unknown:
        raise BundleError(f"layout {', '.join(map(repr, unknown))}: not one of {', '.join(LAYOUTS)}. Fix: name "
                          "layouts from that list in export.layouts (or --layout), or leave it at auto")
    wrong = [name for name in names if name not in fits]
    if wrong:
        student = ("a static-embedding student" if static else "a sentence-encoder transformer student"
                   if embedding else "a student without a pooled `embedding` output")
        raise BundleError(f"layout {', '.join(wrong)}: does not apply to {student}, which can have "
                          f"{', '.join(fits) or 'no other layout'}. Fix: ask for "
                          f"{' or '.join(fits) if fits else 'none'} in export.layouts (or --layout), or leave it "
                          "at auto")
    return names


def write_layouts(folder: Path, model: Path, tokenizer: Path, texts: list[str], *, wanted: list[str] | None = None,
                  variant: str = "fp32", config: Path | None = None, static: bool = False, pooling: str = "mean",
                  normalize: bool = True, max_length: int = 128, atol: float | None = None,
                  allow_approximate: bool = False) -> dict:
    """Write the `wanted` layouts (resolve_layouts' names; None: auto) into `folder` (the bundle folder) and check
    each against `model`'s `embedding` on `texts`. Returns the manifest's record:
    {"written": {layout name: {"folder", "files", "checked": {...}, ...}}, "on_request": [the layouts that apply
    but were not written]}; readme_lines(record) is the README's section on them. Paths in it are relative.

    model: the bundle's ONNX file; tokenizer: the run's tokenizer folder (tokenizer.json, tokenizer_config.json);
    config: the student's config.json (a transformer student needs it: transformers.js reads model_type);
    static: a static-embedding student (model2vec/, static-npy/ instead of hf/); pooling, normalize, max_length:
    what the graph does and where edgekit truncates; variant: the file's quantization ('fp32', 'int8-dynamic',
    ...), which picks transformers.js's file name and the tolerance (atol overrides it); allow_approximate: write
    a static layout even where its format cannot hold the graph (see _static_exactness), recording the measured
    difference, rather than raise."""
    folder, model, tokenizer = Path(folder), Path(model), Path(tokenizer)
    names = resolve_layouts(wanted if wanted is not None else "auto", static=static)
    record = {"written": {}, "on_request": [name for name in applicable(static) if name not in names]}
    if not names:
        return record
    if not texts:
        raise BundleError("write_layouts needs a few texts to check each layout against the ONNX file: pass texts")
    tolerance = atol if atol is not None else TOLERANCE["float" if variant in ("fp32", "fp16") else "quantized"]
    if static:
        record["written"] = write_static(folder, names, model, tokenizer, texts, normalize=normalize,
                                         max_length=max_length, atol=tolerance, allow_approximate=allow_approximate)
    else:
        record["written"][HF] = write_hf(folder / HF, model, tokenizer, texts, variant=variant, config=config,
                                         pooling=pooling, normalize=normalize, max_length=max_length, atol=tolerance)
    return record


# ---- feeds and the file's own outputs ----

def _tokenizer(path: Path):
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise BundleError(f"{file}: missing; the layouts copy the run's fast tokenizer. Fix: save the tokenizer "
                          "with save_pretrained (a fast tokenizer writes tokenizer.json)")
    return Tokenizer.from_file(str(file))


def text_feeds(tok, texts: list[str], max_length: int, names: list[str]) -> dict:
    """The feeds edgekit gives the graph: special tokens added, truncated to max_length, right-padded."""
    tok = _copy(tok)
    tok.no_padding()
    tok.enable_truncation(max_length)
    encodings = tok.encode_batch(texts, add_special_tokens=True)
    length = max(len(e.ids) for e in encodings)
    feeds = {"input_ids": np.zeros((len(texts), length), np.int64),
             "attention_mask": np.zeros((len(texts), length), np.int64),
             "token_type_ids": np.zeros((len(texts), length), np.int64)}
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        feeds["input_ids"][row, :n] = encoding.ids
        feeds["attention_mask"][row, :n] = 1
        feeds["token_type_ids"][row, :n] = encoding.type_ids
    return {name: feeds[name] for name in names}


def _copy(tok):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tok.to_str())


def _session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _inputs_of(proto) -> list[str]:
    initializers = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]


def _ancestors(graph, output: str, limit: int) -> list[str]:
    """Up to `limit` node outputs that `output` depends on, nearest (in graph order) first."""
    producer = {name: node for node in graph.node for name in node.output}
    order = {name: i for i, node in enumerate(graph.node) for name in node.output}
    seen, stack = set(), [output]
    while stack:
        node = producer.get(stack.pop())
        if node is None:
            continue
        for name in node.input:
            if name in producer and name not in seen:
                seen.add(name)
                stack.append(name)
    return sorted(seen, key=lambda name: -order[name])[:limit]


def _run_with(proto, extra: list[str], feeds: dict) -> dict:
    """The graph's outputs and the `extra` tensors, on feeds: {name: array}."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend([onnx.ValueInfoProto(name=name) for name in extra if name not in present])
    session = _session(probe)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """(batch, seq, hidden) -> (batch, hidden) as networks.pool_tokens (sentence-transformers' Pooling) pools."""
    weights = mask[..., None].astype(np.float64)
    x = tokens.astype(np.float64)
    count = np.maximum(weights.sum(1), 1e-9)
    if mode == "mean":
        return (x * weights).sum(1) / count
    if mode == "mean_sqrt_len_tokens":
        return (x * weights).sum(1) / np.sqrt(count)
    if mode == "max":
        return np.where(weights > 0, x, -np.inf).max(1)
    if mode == "weightedmean":
        positions = np.arange(1, x.shape[1] + 1)[None, :, None] - mask.argmax(1)[:, None, None]
        weighted = weights * positions
        return (x * weighted).sum(1) / np.maximum(weighted.sum(1), 1e-9)
    if mode == "cls":
        return x[np.arange(len(x)), mask.argmax(1)]
    if mode == "lasttoken":
        return x[np.arange(len(x)), x.shape[1] - 1 - mask[:, ::-1].argmax(1)]
    raise BundleError(f"pooling {mode!r} is not one of {', '.join(_ST_POOLING)}: pass the student's pooling mode")


def l2(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _token_tensor(proto, feeds: dict, embedding: np.ndarray, pooling: str, normalize: bool, atol: float,
                  model: Path) -> tuple[str, np.ndarray, float]:
    """(name, values, max |diff|) of the tensor the graph pools into `embedding`: among the rank-3 float tensors
    `embedding` depends on, the earliest one that, pooled (and normalized) as the student does, gives it
    (the unmasked token vectors, not the masked copy the mean then sums)."""
    candidates = _ancestors(proto.graph, "embedding", CANDIDATE_NODES)
    values = _run_with(proto, candidates, feeds)
    mask = feeds["attention_mask"]
    found = None
    for name in candidates:  # nearest first: keep overwriting to end on the earliest
        x = values.get(name)
        if x is None or x.dtype.kind != "f" or x.ndim != 3 or x.shape[:2] != mask.shape:
            continue
        pooled = pool(x, mask, pooling)
        if pooled.shape != embedding.shape:
            continue
        diff = float(np.abs((l2(pooled) if normalize else pooled) - embedding).max())
        if diff <= atol:
            found = (name, x, diff)
    if found is None:
        raise BundleError(f"{model}: no tensor among the {CANDIDATE_NODES} nodes before `embedding` gives it when "
                          f"{pooling}-pooled{' and normalized' if normalize else ''}, so the libraries that pool "
                          "last_hidden_state themselves cannot reproduce it (a Dense layer after the pooling, or "
                          "another pooling than the one passed). Fix: pass the student's pooling and normalize, "
                          "or leave this layout out")
    return found


# ---- hf/: transformers.js and sentence-transformers ----

def js_file(variant: str) -> tuple[str, str]:
    """(transformers.js dtype, file name under onnx/) for an edgekit variant name."""
    for prefix, dtype, name in _JS_DTYPES:
        if variant == prefix or variant.startswith(prefix + "-"):
            return dtype, name
    raise BundleError(f"variant {variant!r}: transformers.js has no file name for it (it knows fp32, fp16, int8 "
                      "(q8) and int4 (q4) files). Fix: pass the variant edgekit named the file with")


def write_hf(out: Path, model: Path, tokenizer: Path, texts: list[str], *, variant: str, config: Path | None,
             pooling: str, normalize: bool, max_length: int, atol: float) -> dict:
    import onnx

    if config is None or not Path(config).is_file():
        raise BundleError(f"{config or 'config.json'}: a transformer student's hf/ layout needs its config.json "
                          "(transformers.js and sentence-transformers read model_type from it). Fix: pass config=")
    dtype, file_name = js_file(variant)
    tok = _tokenizer(tokenizer)
    proto = onnx.load(str(model))
    feeds = text_feeds(tok, texts, max_length, _inputs_of(proto))
    embedding = _session(proto).run(["embedding"], feeds)[0]
    name, tokens, pooled_diff = _token_tensor(proto, feeds, embedding, pooling, normalize, atol, model)

    # The layout's copy: the same graph, plus last_hidden_state (an Identity of the pooled tensor).
    if name != TOKEN_OUTPUT:
        proto.graph.node.append(onnx.helper.make_node("Identity", [name], [TOKEN_OUTPUT], name="edgekit_tokens"))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(
        TOKEN_OUTPUT, onnx.TensorProto.FLOAT, ["batch_size", "sequence_length", int(tokens.shape[-1])]))
    onnx.checker.check_model(proto)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx").mkdir(exist_ok=True)
    onnx.save(proto, str(out / "onnx" / file_name))
    got = _session(proto).run([TOKEN_OUTPUT], feeds)[0]
    pooled = pool(got, feeds["attention_mask"], pooling)
    diff = float(np.abs((l2(pooled) if normalize else pooled) - embedding).max())
    if diff > atol:
        raise BundleError(f"{out / 'onnx' / file_name}: its last_hidden_state, {pooling}-pooled, is {diff:.2g} from "
                          f"{model.name}'s embedding (tolerance {atol:g}). Fix: report this as an edgekit bug")

    shutil.copyfile(config, out / "config.json")
    shutil.copyfile(tokenizer / "tokenizer.json", out / "tokenizer.json")
    settings = tokenizer / "tokenizer_config.json"
    tok_config = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}
    tok_config["model_max_length"] = max_length  # both libraries truncate where edgekit measured
    _write_json(out / "tokenizer_config.json", tok_config)
    width = int(tokens.shape[-1])
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _write_json(out / "config_sentence_transformers.json",
                {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json",
                {"word_embedding_dimension": width, **{flag: mode == pooling for mode, flag in _ST_POOLING.items()},
                 "include_prompt": True})
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    js_pooling = _JS_POOLING.get(pooling)
    return {"folder": out.name, "files": files,
            "transformers.js": {"dtype": dtype, "file": f"onnx/{file_name}", "pooling": js_pooling,
                                "normalize": normalize,
                                "note": None if js_pooling else f"the feature-extraction pipeline has no {pooling} "
                                "pooling: call it with pooling 'none' and pool last_hidden_state yourself",
                                # seen with transformers.js 4.3.2 (tests/test_layouts.py)
                                "truncation": f"transformers.js cuts a text past {max_length} tokens after adding "
                                              "the special tokens (its input then ends without [SEP]); edgekit and "
                                              "sentence-transformers keep them, so such texts differ slightly"},
            "sentence-transformers": {"backend": "onnx", "model_kwargs": {"file_name": f"onnx/{file_name}"}},
            "max_length": max_length,
            "checked": {"texts": len(texts), "token_tensor": name, "output": TOKEN_OUTPUT,
                        "compared": f"{pooling}-pooled{' and normalized' if normalize else ''} last_hidden_state "
                                    "vs embedding", "max_abs_diff": max(diff, pooled_diff), "atol": atol}}


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---- model2vec/ and static-npy/: static students ----

def _template_specials(tok) -> list[int]:
    """The ids the tokenizer's template adds to a single text ([CLS], [SEP] for BERT)."""
    encoding = tok.encode("a", add_special_tokens=True)
    return [i for i, flag in zip(encoding.ids, encoding.special_tokens_mask) if flag]


def _unk_id(tok) -> int | None:
    """model2vec's unknown-token id (model2vec.model._get_unk_token_id): the one its encode drops."""
    model = tok.model
    if hasattr(model, "unk_token"):
        return None if model.unk_token is None else tok.token_to_id(model.unk_token)
    return json.loads(tok.to_str())["model"].get("unk_id")


def _mean_weights(values: dict, order: dict, mask: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[(name, (batch, seq) float)]: the 0/1 tensors of the graph inside the attention mask (the tokens its mean
    counts: the mask times the per-id `counted` Gather of a static student), then the attention mask itself."""
    found = []
    for name in sorted(values, key=lambda n: order.get(n, 1 << 30)):
        x = values[name]
        if name not in order or x.dtype.kind != "f" or x.shape[:2] != mask.shape or \
                not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] == 1)):
            continue
        w = x.reshape(mask.shape).astype(np.float64)
        if np.isin(w, (0.0, 1.0)).all() and (w <= mask).all():
            found.append((name, w))
    return [*found, ("attention_mask", mask.astype(np.float64))]


def _rows_and_mean(values: dict, order: dict, mask: np.ndarray) -> tuple[str, str, str] | None:
    """(token rows, the weights the mean counts them by, their mean): the earliest rank-3 float tensor whose
    weighted mean is itself a tensor of the graph (the rows the static student means, before the projection)."""
    flat = {name: x for name, x in values.items() if name in order and x.dtype.kind == "f" and x.ndim == 2}
    weights = _mean_weights(values, order, mask)
    for name in sorted(values, key=lambda n: order.get(n, 1 << 30)):
        x = values[name]
        if name not in order or x.dtype.kind != "f" or x.ndim != 3 or x.shape[:2] != mask.shape or x.shape[2] < 2:
            continue
        for weight_name, w in weights:
            mean = (x * w[..., None]).sum(1) / np.maximum(w.sum(1), 1e-9)[:, None]
            for other in sorted(flat, key=order.get):
                y = flat[other]
                if order[other] > order[name] and y.shape == mean.shape and \
                        np.abs(y - mean).max() <= 1e-5 * max(1.0, np.abs(mean).max()):
                    return name, weight_name, other
    return None


def _affine_after_mean(proto, values: dict, feeds: dict, embedding: np.ndarray, normalize: bool,
                       atol: float, model: Path) -> tuple[np.ndarray, np.ndarray, str, str, str, str]:
    """(A (width, dim), b (width,), rows name, weights name, mean name, last name): the token rows, the weights
    the mean counts them by, their mean, and the affine map from the mean to the vector the graph normalizes (or
    outputs), read off the graph by running its nodes between the two on +-s*e_k (exact for dynamic int8: each
    such input quantizes without loss) and checked to be affine on the texts' means."""
    import onnx

    mask = feeds["attention_mask"]
    order = {name: i for i, node in enumerate(proto.graph.node) for name in node.output}
    found = _rows_and_mean(values, order, mask)
    if found is None:
        raise BundleError(f"{model.name}: no tensor in it is the mean of token rows; a static layout needs a graph "
                          "that means one row per token. Fix: leave the static layouts out (export.layouts: [])")
    rows_name, weights_name, pooled = found
    mean = values[pooled].astype(np.float64)
    last = None
    for name in sorted(values, key=lambda n: order.get(n, -1)):
        x = values[name]
        if order.get(name, -1) <= order[pooled] or x.dtype.kind != "f" or x.shape != embedding.shape:
            continue
        if np.abs((l2(x) if normalize else x) - embedding).max() <= atol:
            last = name
            break
    if last is None:
        raise BundleError(f"{model.name}: no tensor after the mean gives `embedding`, so what follows the mean "
                          "cannot be folded into a table. Fix: leave the static layouts out (export.layouts: [])")
    # The nodes between the mean and `last`, as their own graph with the mean as its input.
    producer = {name: node for node in proto.graph.node for name in node.output}
    initializers = {i.name: i for i in proto.graph.initializer}
    needed, stack, nodes = set(), [last], []
    while stack:
        name = stack.pop()
        if name == pooled or name in initializers or name in needed:
            continue
        node = producer.get(name)
        if node is None:
            raise BundleError(f"{model.name}: what follows the mean of the token rows also reads {name!r}, an input "
                              "of the graph: it is not a function of the mean alone, so it cannot be folded into a "
                              "table. Fix: leave the static layouts out (export.layouts: [])")
        needed.add(name)
        nodes.append(node)
        stack.extend(i for i in node.input if i)
    ordered = [node for node in proto.graph.node if node in nodes]
    used = {i for node in ordered for i in node.input}
    width_in = mean.shape[1]
    graph = onnx.helper.make_graph(
        ordered, "after_mean", [onnx.helper.make_tensor_value_info(pooled, onnx.TensorProto.FLOAT, ["n", width_in])],
        [onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None)],
        [initializers[name] for name in used if name in initializers])
    sub = onnx.helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    session = _session(sub)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([last], {pooled: x.astype(np.float32)})[0].astype(np.float64)

    scale = float(np.abs(mean).max()) or 1.0
    eye = np.eye(width_in) * scale
    plus, minus = run(eye), run(-eye)
    a = ((plus - minus) / (2 * scale)).T  # (width, dim)
    b = ((plus + minus) / 2).mean(0)
    affine = mean @ a.T + b
    actual = values[last].astype(np.float64)
    diff = float(np.abs(l2(affine) - l2(actual)).max() if normalize else np.abs(affine - actual).max())
    if diff > atol:
        raise BundleError(f"{model.name}: what follows the mean of the token rows is not linear (it is {diff:.2g} "
                          "from the best affine map: a Dense layer with an activation?), so a mean of table rows "
                          "cannot reproduce it. Fix: leave the static layouts out (export.layouts: [])")
    return a, b, rows_name, weights_name, pooled, last


def _static_table(proto, tok, feeds: dict, embedding: np.ndarray, normalize: bool, atol: float,
                  model: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(rows (distinct, width) float32, mapping (vocab,) int32: token id -> row, counted (vocab,) bool: the ids
    the graph's mean counts, record): each token id's row of the graph's table, through everything linear after
    the mean, the ids that share a row (a pruned vocabulary maps the ids it drops to [UNK]'s) sharing it."""
    candidates = _ancestors(proto.graph, "embedding", CANDIDATE_NODES)
    values = _run_with(proto, candidates, feeds)
    a, b, name, weights, pooled, last = _affine_after_mean(proto, values, feeds, embedding, normalize, atol, model)
    size = tok.get_vocab_size(with_added_tokens=True)
    inputs = _inputs_of(proto)
    fetch = [name] if weights == "attention_mask" else [name, weights]
    session = _session(_with_outputs(proto, fetch))
    raw, counted = [], []
    for start in range(0, size, 4096):
        # every id of the tokenizer once, one text of them all in the mask: the rows it gathers and (the weights
        # of the graph's mean) whether each id counts
        ids = np.arange(start, min(start + 4096, size), dtype=np.int64)[None, :]
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        try:
            got = session.run(fetch, {k: feed[k] for k in inputs})
        except Exception as error:  # onnxruntime raises its own types for an id outside the table
            raise BundleError(f"{model.name}: its table does not take every id of the tokenizer ({size} ids): "
                              f"{error}. Fix: pass the tokenizer the student was exported with") from error
        raw.append(got[0][0])
        counted.append(got[1].reshape(-1) > 0.5 if len(got) > 1 else np.ones(ids.shape[1], bool))
    raw, counted = np.concatenate(raw), np.concatenate(counted)
    _, first, inverse = np.unique(raw, axis=0, return_index=True, return_inverse=True)
    by_first = np.argsort(first)  # the distinct rows in the order of the first id that has each
    position = np.empty_like(by_first)
    position[by_first] = np.arange(len(by_first))
    mapping = position[inverse.reshape(-1)].astype(np.int32)
    rows = (raw[first[by_first]].astype(np.float64) @ a.T + b).astype(np.float32)
    return rows, mapping, counted, {"token_rows": name, "counted_by": weights, "mean": pooled, "folded_through": last,
                                    "bias_norm": float(np.linalg.norm(b))}


def _with_outputs(proto, names: list[str]):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.output[:]
    copy.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    return copy


def model2vec_encode(rows: np.ndarray, mapping: np.ndarray | None, tok, texts: list[str], max_length: int | None,
                     normalize: bool) -> np.ndarray:
    """model2vec 0.10's StaticModel.encode, reproduced: the text cut to max_length * the median token length
    (characters), tokenized without special tokens and truncated to max_length, [UNK] dropped, the rows
    (rows[mapping[id]]) meaned (a text with no tokens left: zeros), then L2-normalized when `normalize`."""
    tok = _copy(tok)
    tok.no_padding()
    vocab = tok.get_vocab(with_added_tokens=True)
    median = int(np.median([len(token) for token in vocab]))
    if max_length is not None:
        texts = [text[:max_length * median] for text in texts]
        tok.enable_truncation(max_length)
    else:
        tok.no_truncation()
    unk = _unk_id(tok)
    out = np.zeros((len(texts), rows.shape[1]), np.float32)
    for row, encoding in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        ids = [i for i in encoding.ids if i != unk]
        if ids:
            out[row] = rows[mapping[ids] if mapping is not None else ids].mean(0)
    if normalize:
        out = out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-32)
    return out


def _static_exactness(table: np.ndarray, counted: np.ndarray, specials: list[int], unk: int | None,
                      normalize: bool) -> list[str]:
    """Why a mean of table rows without special tokens and [UNK] (model2vec's encode) cannot be the graph's
    embedding (empty: it can). `table`: (vocab, width), each id's row. A graph that counts the template's special
    tokens in its mean (a student from before edgekit left them out) adds their rows to every text: under
    normalization only the direction counts, so those rows must sum to zero; without it the count differs too."""
    scale = float(np.abs(table).max()) or 1.0
    reasons = []
    kept = [i for i in specials if counted[i]]
    if kept and not normalize:
        reasons.append(f"the graph means {len(kept)} special tokens' rows in and does not normalize, so its "
                       "embedding is the model2vec mean scaled by n / (n + specials)")
    elif kept and np.abs(table[kept].sum(0)).max() > 1e-6 * scale:
        reasons.append("the graph counts the special tokens ([CLS]/[SEP]) in its mean and their rows (trained, "
                       "plus the projection's bias) do not sum to zero: it adds them to every text, model2vec drops "
                       "special tokens (a student exported before edgekit left them out of the mean: retrain it)")
    if unk is not None and counted[unk] and (not normalize or np.abs(table[unk]).max() > 1e-6 * scale):
        reasons.append("the graph counts [UNK] in its mean (and its row is not zero, or the graph does not "
                       "normalize): model2vec drops [UNK]")
    return reasons


def _static_notes(counted: np.ndarray, specials: list[int], unk: int | None, bias_norm: float) -> list[str]:
    """Where the layouts and the graph still differ, whatever the table: texts no check covers."""
    notes = []
    if bias_norm > 0:
        notes.append("a text with no token the mean counts (empty, or only [UNK]s): model2vec gives zeros, the "
                     "graph the (normalized) projection bias")
    other = np.flatnonzero(~counted)
    if len(set(other.tolist()) - set(specials) - {unk}):
        notes.append("a text that spells out a special token ('[MASK]'): the graph leaves it out of the mean, "
                     "model2vec keeps its row")
    return notes


def _plain(tok):
    """The tokenizer without padding or truncation: what the layouts ship (model2vec sets its own truncation; the
    .npy recipe truncates itself)."""
    tok = _copy(tok)
    tok.no_padding()
    tok.no_truncation()
    return tok


def write_static(folder: Path, names: list[str], model: Path, tokenizer: Path, texts: list[str], *,
                 normalize: bool, max_length: int, atol: float, allow_approximate: bool = False) -> dict:
    """model2vec/ and/or static-npy/ (`names`) in `folder`, from one table read off `model`: {name: record}."""
    import onnx
    from safetensors.numpy import save_file

    tok = _tokenizer(tokenizer)
    proto = onnx.load(str(model))
    feeds = text_feeds(tok, texts, max_length, _inputs_of(proto))
    embedding = _session(proto).run(["embedding"], feeds)[0]
    rows, mapping, counted, folded = _static_table(proto, tok, feeds, embedding, normalize, atol, model)
    table = rows[mapping]  # (vocab, width): each id's row
    specials = _template_specials(tok)
    unk = _unk_id(tok)
    # model2vec truncates the text's own tokens; the graph's max_length counts the template's special tokens too
    content_length = max_length - len(specials)
    encoded = model2vec_encode(rows, mapping, tok, texts, content_length, normalize)
    diff = float(np.abs(encoded - embedding).max())
    cosine = float((l2(encoded) * l2(embedding)).sum(1).min())
    reasons = _static_exactness(table, counted, specials, unk, normalize)
    if diff > atol and not allow_approximate:
        why = "; ".join(reasons) or "a difference edgekit does not expect (report it as a bug)"
        raise BundleError(f"{model.name}: a mean of its table rows without special tokens and [UNK] (model2vec's "
                          f"encode) gives embeddings up to {diff:.2g} from the file's (tolerance {atol:g}, lowest "
                          f"cosine {cosine:.4f}), so {' and '.join(names)} cannot reproduce it: {why}. Fix: leave "
                          "the static layouts out (export.layouts: []), or write them as an approximation "
                          "(allow_approximate)")
    checked = {"texts": len(texts), **folded, "compared": "model2vec's encode (reproduced) vs embedding",
               "max_abs_diff": diff, "min_cosine": cosine, "atol": atol, "exact": diff <= atol,
               "approximation": reasons if diff > atol else [],
               "differs_for": _static_notes(counted, specials, unk, folded["bias_norm"])}
    out = {}
    if MODEL2VEC in names:
        target = folder / MODEL2VEC
        target.mkdir(parents=True, exist_ok=True)
        # model2vec's own format for a table with fewer rows than ids (its vocabulary quantization):
        # "embeddings" (rows, width) and "mapping" (id -> row), read by StaticModel.from_pretrained
        save_file({"embeddings": rows, "mapping": mapping}, str(target / "model.safetensors"))
        _plain(tok).save(str(target / "tokenizer.json"), pretty=False)
        _write_json(target / "config.json", {
            "model_type": "model2vec", "architectures": ["StaticModel"], "hidden_dim": int(rows.shape[1]),
            "normalize": normalize, "max_length": content_length, "embedding_dtype": "float32",
            "vocabulary_quantization": int(rows.shape[0])})
        out[MODEL2VEC] = {
            "folder": MODEL2VEC, "files": _files(target), "rows": int(rows.shape[0]), "ids": len(mapping),
            "width": int(rows.shape[1]), "normalize": normalize, "max_length": content_length,
            "load": f'StaticModel.from_pretrained("{MODEL2VEC}")',
            "note": f"model2vec first cuts a text to {content_length} x its median token length characters: a text "
                    "with more characters per token than that can lose tokens the graph keeps",
            "checked": checked}
    if STATIC_NPY in names:
        target = folder / STATIC_NPY
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / "embeddings.npy", table.astype(np.float32))
        _plain(tok).save(str(target / "tokenizer.json"), pretty=False)
        direct = _npy_encode(table, _plain(tok), texts, content_length, unk, normalize)
        npy_diff = float(np.abs(direct - embedding).max())
        out[STATIC_NPY] = {
            "folder": STATIC_NPY, "files": _files(target), "shape": list(table.shape), "dtype": "float32",
            "max_length": content_length, "unk_id": unk, "normalize": normalize,
            "recipe": "ids = tokenizer.json's ids of the text without special tokens, the first "
                      f"{content_length}, [UNK] ({unk}) dropped; embedding = mean of those rows of embeddings.npy"
                      + (", L2-normalized" if normalize else ""),
            "checked": {**checked, "compared": "the recipe vs embedding", "max_abs_diff": npy_diff,
                        "exact": npy_diff <= atol}}
    return out


def _npy_encode(table: np.ndarray, tok, texts: list[str], length: int, unk: int | None,
                normalize: bool) -> np.ndarray:
    """The static-npy recipe (README): ids without special tokens, the first `length`, [UNK] dropped, mean."""
    out = np.zeros((len(texts), table.shape[1]), np.float32)
    for row, text in enumerate(texts):
        ids = [i for i in tok.encode(text, add_special_tokens=False).ids[:length] if i != unk]
        if ids:
            out[row] = table[ids].mean(0)
    return l2(out).astype(np.float32) if normalize else out


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- the bundle README's section ----

_ON_REQUEST = {HF: "hf/ (transformers.js and sentence-transformers' ONNX backend; a copy of the model file)",
               MODEL2VEC: "model2vec/ (model2vec's StaticModel)",
               STATIC_NPY: "static-npy/ (tokenizer.json + embeddings.npy, one row per token id)"}


def readme_lines(record: dict) -> list[str]:
    """The bundle README's section "## Other layouts in this folder": for each layout write_layouts wrote (its
    `record`), a short paragraph and a snippet that loads it from the bundle's files alone; then the layouts that
    apply but were not written, and how to ask for them. [] when no layout applies."""
    written, on_request = record.get("written") or {}, record.get("on_request") or []
    if not written and not on_request:
        return []
    lines = ["## Other layouts in this folder", ""]
    if not written:
        lines += ["None: this bundle holds model.onnx and tokenizer.json only.", ""]
    if HF in written:
        lines += _hf_readme(written[HF])
    if MODEL2VEC in written:
        lines += _model2vec_readme(written[MODEL2VEC])
    if STATIC_NPY in written:
        lines += _npy_readme(written[STATIC_NPY])
    if on_request:
        names = " ".join(f"--layout {name}" for name in on_request)
        lines += [f"{'Also' if written else 'Available'} on request: "
                  + "; ".join(_ON_REQUEST[name] for name in on_request)
                  + f". Bundle again with `edgekit bundle RUN NAME {names}`, or set `export.layouts: "
                  f"[{', '.join([*written, *on_request])}]` in the recipe.", ""]
    return lines


def _checked_line(checked: dict, what: str) -> str:
    return (f"Checked when the bundle was written: {what} on {checked['texts']} texts is within "
            f"{checked['max_abs_diff']:.1e} of model.onnx's `embedding` (tolerance {checked['atol']:g}).")


def _hf_readme(rec: dict) -> list[str]:
    js, st = rec["transformers.js"], rec["sentence-transformers"]
    pooling = js["pooling"] or "none"
    options = f"{{ pooling: '{pooling}', normalize: {'true' if js['normalize'] else 'false'} }}"
    lines = [f"### {rec['folder']}/: transformers.js and sentence-transformers", "",
             f"`{rec['folder']}/` is model.onnx in the layout both libraries load: `{js['file']}` is the same graph, "
             "which also outputs `last_hidden_state` (the token vectors `embedding` pools; each library pools them "
             f"itself), and the tokenizer cuts texts at {rec['max_length']} tokens. "
             + _checked_line(rec["checked"], "pooling last_hidden_state as the libraries do"), "",
             "transformers.js (Node; run from the bundle folder, nothing is fetched):", "", "```js",
             "import { env, pipeline } from '@huggingface/transformers';", "",
             "env.allowRemoteModels = false;", "env.localModelPath = './';  // the bundle folder",
             (f"const extractor = await pipeline('feature-extraction', '{rec['folder']}', "
             f"{{ dtype: '{js['dtype']}' }});"),
             f"const output = await extractor(['first text', 'second text'], {options});",
             "const embeddings = output.tolist();", "```", ""]
    if js.get("note"):
        lines += [f"Note: {js['note']}.", ""]
    lines += [f"Note: {js['truncation']}.", "",
              ("sentence-transformers (its ONNX backend needs `pip install optimum-onnx`, which requires "
              "transformers < 4.58: sentence-transformers 5.x; checked with 5.7.0):"), "", "```python",
              "from sentence_transformers import SentenceTransformer", "",
              (f'model = SentenceTransformer("{rec["folder"]}", backend="{st["backend"]}", '
              f'model_kwargs={{"file_name": "{st["model_kwargs"]["file_name"]}"}}, local_files_only=True)'),
              'embeddings = model.encode(["first text", "second text"])', "```", ""]
    return lines


def _differs(checked: dict) -> list[str]:
    notes = [*checked.get("approximation", []), *checked.get("differs_for", [])]
    if not checked.get("exact", True):
        notes.insert(0, f"an approximation (lowest cosine {checked['min_cosine']:.4f} on the checked texts)")
    return [f"Differs from model.onnx for {'; '.join(notes)}.", ""] if notes else []


def _model2vec_readme(rec: dict) -> list[str]:
    return [f"### {rec['folder']}/: model2vec", "",
            f"`{rec['folder']}/` is model2vec's folder (model2vec >= 0.10): {rec['rows']} rows of {rec['width']} "
            f"floats and the map from the tokenizer's {rec['ids']} ids to them, the projection folded in; model2vec "
            f"means the rows of a text's tokens (special tokens and [UNK] left out, as the graph leaves them out)"
            f"{' and normalizes' if rec['normalize'] else ''}, cutting texts at {rec['max_length']} tokens. "
            + _checked_line(rec["checked"], "model2vec's encode"), "",
            "```python", "from model2vec import StaticModel", "",
            f'model = StaticModel.from_pretrained("{rec["folder"]}")  # a local folder: nothing is fetched',
            'embeddings = model.encode(["first text", "second text"])', "```", "",
            f"Note: {rec['note']}.", "", *_differs(rec["checked"])]


def _npy_readme(rec: dict) -> list[str]:
    unk = "" if rec["unk_id"] is None else f" if i != {rec['unk_id']}"  # [UNK]
    return [f"### {rec['folder']}/: tokenizer.json + embeddings.npy", "",
            f"`{rec['folder']}/embeddings.npy` is one float32 row per token id ({rec['shape'][0]} x "
            f"{rec['shape'][1]}), the projection folded in, beside its tokenizer.json: the Firefox-style pair, for "
            f"runtimes that load a tokenizer and one table. {rec['recipe'][0].upper()}{rec['recipe'][1:]}. "
            + _checked_line(rec["checked"], "this recipe"), "",
            "```python", "import numpy as np", "from tokenizers import Tokenizer", "",
            (f'table, tokenizer = np.load("{rec["folder"]}/embeddings.npy"), '
            f'Tokenizer.from_file("{rec["folder"]}/tokenizer.json")'),
            f'ids = [i for i in tokenizer.encode("a text", add_special_tokens=False).ids[:{rec["max_length"]}]{unk}]',
            "vector = table[ids].mean(0)",
            *(["vector = vector / np.linalg.norm(vector)"] if rec["normalize"] else []), "```", "",
            *_differs(rec["checked"])]
