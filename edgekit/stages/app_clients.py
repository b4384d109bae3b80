"""What an app needs to use a text bundle without edgekit: the tokenizer as measured, reference.json, and one
snippet per client (Python, Node, the browser) in the bundle's README, each run against a bundle by the tests
(tests/test_app_clients.py).

The tokenization contract is the one edgekit measured with: tokenizer.json's ids, `prefix` + at most
max_tokens - len(prefix) - len(suffix) text tokens + `suffix` (BERT: [CLS] ... [SEP], 128 tokens in all), a batch
padded to its longest text with `pad_id` (attention_mask 0 there) and token_type_ids `type_id`.
- Python's `tokenizers` applies all of it from tokenizer.json itself: the bundle's copy has its truncation and
  padding set to these (the run's copy could hold whatever the last call set: 129 on a long-text probe).
- JavaScript's tokenizers (@huggingface/tokenizers, transformers.js's) read the vocabulary and the special-token
  template but not the truncation, so the JavaScript snippets apply `prefix`, the cut and `suffix` themselves,
  with the numbers written into them here.
Both are checked at bundle time, on every reference text, against the ids edgekit's own feeds held.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgekit.errors import BundleError
from edgekit.trust.reading import read_json

APP_REFERENCE = "reference.json"
APP_REFERENCE_FORMAT = "edgekit.app-reference/1"
# The most reference texts reference.json keeps (each with every output: an embedding is hundreds of numbers).
MAX_APP_TEXTS = 64
# The client packages the snippets are written for, and the ones tests/test_app_clients.py runs them with
# (web/package.json pins the same: test_app_clients checks that they agree).
NPM = {"onnxruntime-node": "1.31.1", "onnxruntime-web": "1.31.1", "@huggingface/tokenizers": "0.2.0"}
PIP = ("onnxruntime", "tokenizers", "numpy")


# ---------------------------------------------------------------------------- the tokenizer as measured

def ship_tokenizer(source: Path, folder: Path, max_length: int, loaded) -> None:
    """The run's tokenizer files copied into the bundle `folder`, tokenizer.json set to truncate at `max_length`
    tokens (special tokens included) and pad a batch to its longest text, tokenizer_config.json's model_max_length
    to `max_length`: loaded as shipped, by `tokenizers`, transformers or transformers.js, the tokenizer cuts where
    edgekit measured. `loaded`: the run's tokenizer (transformers), for its padding token and sides."""
    for file in sorted(source.iterdir()):
        shutil.copy2(file, folder / file.name)
    spec_file, config_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if spec_file.is_file():
        spec = read_json(spec_file, dict, error=BundleError)
        spec["truncation"] = {"direction": "Left" if loaded.truncation_side == "left" else "Right",
                              "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
        spec["padding"] = None if loaded.pad_token is None else {
            "strategy": "BatchLongest", "direction": "Left" if loaded.padding_side == "left" else "Right",
            "pad_to_multiple_of": None, "pad_id": loaded.pad_token_id, "pad_type_id": loaded.pad_token_type_id,
            "pad_token": str(loaded.pad_token)}
        spec_file.write_text(json.dumps(spec, ensure_ascii=False) + "\n", encoding="utf-8")
    if config_file.is_file():
        config = read_json(config_file, dict, error=BundleError)
        config["model_max_length"] = max_length
        config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def shipped_tokenizer(folder: Path):
    """The bundle's tokenizer.json as Python's `tokenizers` loads it (what the README's Python snippet uses)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def token_contract(folder: Path, max_length: int) -> dict | None:
    """{"max_tokens", "prefix", "suffix", "pad_id", "type_id"} of the bundle's tokenizer.json (what a JavaScript
    app applies itself), read off how it encodes one word with and without its special tokens; None when its
    template is not `prefix + text + suffix` (the README then says so and gives no JavaScript snippet)."""
    tokenizer = shipped_tokenizer(folder)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a")
    starts = [i for i in range(len(full.ids) - len(plain) + 1) if full.ids[i:i + len(plain)] == plain]
    if not plain or not starts or len(set(full.type_ids)) > 1:
        return None
    padding = tokenizer.padding or {}
    return {"max_tokens": max_length, "prefix": full.ids[:starts[0]], "suffix": full.ids[starts[0] + len(plain):],
            "pad_id": padding.get("pad_id", 0), "type_id": full.type_ids[0] if full.type_ids else 0}


def contract_ids(contract: dict, tokenizer, text: str) -> list[int]:
    """A text's ids as the JavaScript snippets make them from `contract`."""
    room = contract["max_tokens"] - len(contract["prefix"]) - len(contract["suffix"])
    return contract["prefix"] + tokenizer.encode(text, add_special_tokens=False).ids[:room] + contract["suffix"]


def check_tokenization(folder: Path, contract: dict | None, texts: list[str], measured: list[list[int]]) -> dict:
    """BundleError unless the shipped tokenizer.json (and `contract`, where there is one) gives, for each of
    `texts`, exactly the ids edgekit measured with (`measured`, unpadded); the record of the check otherwise."""
    tokenizer = shipped_tokenizer(folder)
    plain = shipped_tokenizer(folder)
    plain.no_truncation()
    plain.no_padding()
    problems = []
    for text, want in zip(texts, measured):
        for who, got in (("tokenizer.json", tokenizer.encode(text).ids),
                         *((("the JavaScript snippets' tokenization", contract_ids(contract, plain, text)),)
                           if contract else ())):
            if got != want:
                problems.append(f"{who} gives {len(got)} ids for {text[:60]!r}, edgekit measured with {len(want)}"
                                + ("" if len(got) != len(want) else " (different ones)"))
    if problems:
        raise BundleError("the bundle's tokenizer does not tokenize as edgekit measured:\n"
                          + "\n".join(f"  {p}" for p in problems[:10])
                          + "\nReport this tokenizer to edgekit; meanwhile tokenize with transformers' AutoTokenizer "
                            "on the run's tokenizer/ folder (truncation=True, max_length as in the recipe).")
    longest = max((len(ids) for ids in measured), default=0)
    return {"texts": len(texts), "longest": longest, "javascript": contract is not None}


# ---------------------------------------------------------------------------- reference.json

def app_reference(session, folder: Path, texts: list[str], tasks: dict, labels: dict, tolerance: dict,
                  runtime: str) -> dict:
    """reference.json: every output of `session` (the bundle's model.onnx) for each text, one text per run as an
    app sends them, and each classification task's label; `tasks`: {task: {"kind", "output"}}."""
    import numpy as np

    from edgekit.data.kinds import kind_of

    tokenizer = shipped_tokenizer(folder)
    names = [i.name for i in session.get_inputs()]
    outputs: dict[str, list] = {o.name: [] for o in session.get_outputs()}
    for text in texts:
        encoded = tokenizer.encode(text)
        columns = {"input_ids": encoded.ids, "attention_mask": encoded.attention_mask, "token_type_ids": encoded.type_ids}
        feed = {name: np.array([columns[name]], dtype=np.int64) for name in names}
        for name, value in zip(outputs, session.run(None, feed)):
            outputs[name].append([float(f"{x:.7g}") for x in np.asarray(value, dtype=np.float64)[0].ravel()])
    classified = {task: spec["output"] for task, spec in tasks.items()
                  if kind_of(spec["kind"]).labelled and spec["output"] in outputs}
    return {"format": APP_REFERENCE_FORMAT, "file": "model.onnx", "computed_with": runtime,
            "texts": texts, "outputs": outputs, "label_outputs": classified,
            "labels": {task: [labels[task][int(np.argmax(row))] if task in labels else int(np.argmax(row))
                              for row in outputs[output]] for task, output in classified.items()},
            "tolerance": tolerance}


# ---------------------------------------------------------------------------- README sections

def contract_lines(manifest: dict, labels: dict, contract: dict | None) -> list[str]:
    """The README's 'What goes in and what comes out' for a text bundle."""
    from edgekit.data.kinds import kind_of
    from edgekit.units import class_list

    max_tokens = manifest["max_length"]
    lines = ["## What goes in and what comes out", "",
             (f"- **Texts in**, tokenized with this folder's `tokenizer.json`, at most {max_tokens} tokens each, "
              "special tokens included: a longer text is cut there, as edgekit measured (the file's `truncation` "
              "says so; transformers and transformers.js read `model_max_length` from `tokenizer_config.json`).")]
    if contract:
        lines += [(f"  Each text is `{contract['prefix']}` + its first {max_tokens - len(contract['prefix']) - len(contract['suffix'])} "
                   f"word pieces + `{contract['suffix']}`; a batch is padded to its longest text with id "
                   f"{contract['pad_id']} (attention_mask 0 there); token_type_ids are {contract['type_id']}. "
                   "JavaScript tokenizers do not apply tokenizer.json's cut: the snippets below do.")]
    embedding = manifest.get("embedding")
    for task, spec in manifest["tasks"].items():
        output = next((o for o in manifest["model"]["outputs"] if o["name"] == spec["output"]), None)
        width = output["shape"][-1] if output else "?"
        if kind_of(spec["kind"]).labelled:
            names = labels.get(task)
            lines.append(f"- **{task}** -> `{spec['output']}` [texts, {width}]: raw logits, not probabilities "
                         "(softmax them for those); the label is the index of the largest"
                         + (f", named by `labels.json[\"{task}\"]` ({class_list(names)})." if names else "."))
        else:
            how = ("mean" if not embedding else embedding["pooling"]) + "-pooled"
            normalized = bool(embedding and embedding["normalized"])
            lines.append(f"- **{task}** -> `{spec['output']}` [texts, {width}]: one vector per text, already "
                         f"{how} over its tokens" + (" and L2-normalized" if normalized else "") + " in the graph: use "
                         "it as is" + (" (cosine similarity = dot product)" if normalized else "")
                         + "; do not pool or normalize it again.")
    computed = ((manifest.get("clients") or {}).get("reference") or {}).get("computed_with")
    lines += [("- `reference.json`: what this file gave on real texts, one text per run"
               + (f" ({computed})" if computed else "") + ": `texts[i]`, "
              "`outputs[name][i]` (the output's row for text i, as a flat list), `labels[task][i]` (read off "
              "`outputs[label_outputs[task]][i]`), and the "
              "`tolerance` (atol, rtol) an app's results should agree within. An app can test itself against it."), ""]
    return lines


def python_lines(manifest: dict, labels: dict, session_line: str) -> list[str]:
    """The README's Python section: `tokenizers` and onnxruntime only."""
    model = manifest["model"]
    inputs = [i["name"] for i in model["inputs"]]
    columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    fixed = manifest["fixed_shape"]
    lines = ["## Python", "", f"`pip install {' '.join(PIP)}`, then, in this folder:", "", "```python",
             "import json", "", "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", "",
             ("tokenizer = Tokenizer.from_file(\"tokenizer.json\")  # cuts at "
              f"{manifest['max_length']} tokens and pads a batch, as measured")]
    if fixed and fixed.get("seq_len"):
        lines += [(f"tokenizer.enable_padding(pad_id=tokenizer.padding[\"pad_id\"], pad_token=tokenizer.padding"
                   f"[\"pad_token\"], length={fixed['seq_len']})  # {fixed['file']} takes exactly {fixed['seq_len']}")]
    lines += [session_line, 'labels = json.load(open("labels.json"))', "", "", "def predict(texts):",
              "    encodings = tokenizer.encode_batch(texts)"]
    lines += ["    feeds = {"] + [f"        \"{name}\": np.array([e.{columns[name]} for e in encodings], dtype=np.int64),"
                                  for name in inputs] + ["    }"]
    lines += ["    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))", "", ""]
    if fixed and fixed["batch"] > 1:
        lines.insert(-3, f"# {fixed['file']} takes exactly {fixed['batch']} texts per run: pad the batch.")
    lines += _python_example(manifest, labels) + ["```", ""]
    return lines


def _python_example(manifest: dict, labels: dict) -> list[str]:
    from edgekit.data.kinds import kind_of

    lines = ['outputs = predict(["an example sentence"])']
    for task, spec in manifest["tasks"].items():
        if kind_of(spec["kind"]).labelled:
            pick = f'int(outputs["{spec["output"]}"][0].argmax())'
            lines.append(f'print("{task}:", labels["{task}"][{pick}])' if task in labels else f'print("{task}:", {pick})')
        else:
            lines.append(f'print("{task}:", outputs["{spec["output"]}"][0][:4])')
    return lines


def _js_body(manifest: dict, labels: dict, contract: dict) -> list[str]:
    """What the Node and browser snippets share, after the session and tokenizer are opened: the tokenization as
    measured, predict(texts) -> {output: one array of numbers per text}, and one call."""
    from edgekit.data.kinds import kind_of

    lines = [(f"// Tokenize as edgekit measured: {contract['prefix']} + the first word pieces + {contract['suffix']}, "
              f"{contract['max_tokens']} tokens at most."),
             (f"const MAX_TOKENS = {contract['max_tokens']}, PREFIX = {contract['prefix']}, "
              f"SUFFIX = {contract['suffix']}, PAD_ID = {contract['pad_id']}, TYPE_ID = {contract['type_id']};"),
             "function encode(texts) {",
             "  const rows = texts.map((text) => [...PREFIX, ...tokenizer.encode(text, { add_special_tokens: false }).ids",
             "    .slice(0, MAX_TOKENS - PREFIX.length - SUFFIX.length), ...SUFFIX]);",
             "  const width = Math.max(...rows.map((row) => row.length)), size = texts.length * width;",
             "  const ids = new BigInt64Array(size).fill(BigInt(PAD_ID)), mask = new BigInt64Array(size);",
             "  rows.forEach((row, i) => row.forEach((id, j) => { ids[i * width + j] = BigInt(id); mask[i * width + j] = 1n; }));",
             "  const dims = [texts.length, width];",
             "  return { input_ids: new ort.Tensor(\"int64\", ids, dims), attention_mask: new ort.Tensor(\"int64\", mask, dims),",
             "           token_type_ids: new ort.Tensor(\"int64\", new BigInt64Array(size).fill(BigInt(TYPE_ID)), dims) };",
             "}",
             "",
             "// {output name: one array of numbers per text}",
             "async function predict(texts) {",
             "  const feeds = encode(texts);",
             "  const results = await session.run(Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]])));",
             "  return Object.fromEntries(Object.entries(results).map(([name, tensor]) => {",
             "    const width = tensor.data.length / tensor.dims[0];",
             "    return [name, Array.from({ length: tensor.dims[0] }, (_, i) => Array.from(tensor.data.slice(i * width, (i + 1) * width)))];",
             "  }));",
             "}",
             "",
             'const outputs = await predict(["an example sentence"]);',
             "const argmax = (row) => row.indexOf(Math.max(...row));"]
    for task, spec in manifest["tasks"].items():
        if kind_of(spec["kind"]).labelled:
            pick = f'argmax(outputs["{spec["output"]}"][0])'
            lines.append(f'console.log("{task}:", labels["{task}"][{pick}]);' if task in labels
                         else f'console.log("{task}:", {pick});')
        else:
            lines.append(f'console.log("{task}:", outputs["{spec["output"]}"][0].slice(0, 4));')
    return lines


def node_lines(manifest: dict, labels: dict, contract: dict | None, threads: int) -> list[str]:
    """The README's Node section: onnxruntime-node and @huggingface/tokenizers on model.onnx."""
    if contract is None:
        return ["## Node and the browser", "", ("This tokenizer's special-token template is not `prefix + text + "
                "suffix`, so no JavaScript snippet is given: tokenize with transformers.js's AutoTokenizer on this "
                "folder (`truncation: true`), and check the ids against Python's `tokenizers` on reference.json's "
                "texts."), ""]
    packages = " ".join(f"{name}@{NPM[name]}" for name in ("onnxruntime-node", "@huggingface/tokenizers"))
    return ["## Node", "", f"`npm install {packages}`, then `node app.mjs` with this as app.mjs in this folder:", "",
            "```js", 'import { readFileSync } from "node:fs";', 'import * as ort from "onnxruntime-node";',
            'import { Tokenizer } from "@huggingface/tokenizers";', "",
            'const read = (file) => JSON.parse(readFileSync(new URL(file, import.meta.url), "utf8"));',
            'const tokenizer = new Tokenizer(read("./tokenizer.json"), read("./tokenizer_config.json"));',
            'const labels = read("./labels.json");',
            'const session = await ort.InferenceSession.create(readFileSync(new URL("./model.onnx", import.meta.url)),',
            f'  {{ executionProviders: ["cpu"], intraOpNumThreads: {threads} }});  // as measured', "",
            *_js_body(manifest, labels, contract), "```", ""]


def browser_lines(manifest: dict, labels: dict, contract: dict | None, web: dict | None) -> list[str]:
    """The README's browser section: onnxruntime-web (wasm) and @huggingface/tokenizers on model.onnx, and what
    was measured of this file in a browser (`web`), if anything."""
    if contract is None:
        return []
    packages = " ".join(f"{name}@{NPM[name]}" for name in ("onnxruntime-web", "@huggingface/tokenizers"))
    lines = ["## Browser", "",
             (f"`npm install {packages}`, then serve this folder (with its `node_modules/`) over http(s), not "
              "file://, and open this as index.html in it (a bundler's `import` works the same without the import "
              "map):"), "",
             "```html", '<script type="importmap">',
             '  {"imports": {"onnxruntime-web": "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",',
             '               "@huggingface/tokenizers": "./node_modules/@huggingface/tokenizers/dist/tokenizers.min.mjs"}}',
             "</script>", '<script type="module">', 'import * as ort from "onnxruntime-web";',
             'import { Tokenizer } from "@huggingface/tokenizers";', "",
             "ort.env.wasm.numThreads = 1;  // more threads need a cross-origin isolated page (COOP/COEP headers)",
             "const read = async (file) => (await fetch(file)).json();",
             'const tokenizer = new Tokenizer(await read("./tokenizer.json"), await read("./tokenizer_config.json"));',
             'const labels = await read("./labels.json");',
             'const session = await ort.InferenceSession.create("./model.onnx", { executionProviders: ["wasm"] });', "",
             *_js_body(manifest, labels, contract), "</script>", "```", ""]
    return lines + web_lines(web)


def web_lines(web: dict | None) -> list[str]:
    """What the README says of this file in onnxruntime-web: as the run measured it there (accuracy, latency, and
    how far its outputs are from native onnxruntime's), or that it was not measured there."""
    if not web:
        return [("This file was not measured in a browser by this run: `--target web` (after `make setup-web`) "
                 "scores and times every file in onnxruntime-web inside Chromium and compares its outputs with "
                 "native onnxruntime's. int8-dynamic files can give other numbers there than natively."), ""]
    lines = [f"Measured by the run in {web['runtime']}, {web.get('threads') or 1} thread(s): "
             + ", ".join(f"{task} {m['metric']} {m['value']:.4f}" for task, m in web["metrics"].items())
             + f"; latency p50 {web['latency_ms']['p50']:.3g} / p95 {web['latency_ms']['p95']:.3g} ms (model only)."]
    agreement = (web.get("agreement") or {}).get("tasks") or {}
    for task, record in agreement.items():
        changed = record.get("labels_changed")
        lines.append(f"- {task}: outputs within {record['max_abs_diff']:.2g} of native onnxruntime's"
                     if record.get("max_abs_diff") is not None else f"- {task}: outputs not compared")
        if changed is not None:
            lines[-1] += (f"; **{changed} of {record['of']} answers differ**" if changed
                          else f"; all {record['of']} answers the same")
    return lines + [""]
