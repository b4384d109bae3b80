"""Accuracy-aware int8: keep the most quantization-sensitive MatMuls in fp32 until every task fits.

int8-dynamic with signed per-channel weights is tried first (0.42x of fp32 latency on a VNNI CPU,
FIELD-NOTES). When any task's metric then drops by more than the recipe's `quantize.max_drop`
(in % of the fp32 file's metric), a per-node sensitivity pass quantizes each MatMul ALONE and
measures how far the outputs move from fp32 on a few distillation inputs (an isolated error ranks
nodes cleanly; leaving one node out of an all-int8 graph changes the outputs by less than the noise
of the others). The most sensitive nodes are then kept in fp32, one more at a time, each time
scoring every task, until the drop fits. FIELD-NOTES found the FFN down-projections (fed by the
post-GELU activation) to be MiniLM's sensitive matmuls; the pass finds them, or others, per model.

Every trial file is quantized with the reduce_range setting of the file being refined (the caller
passes it): a search on 8-bit trials would rank and fit nodes for another file than the 7-bit one an
x86 host without VNNI ships (quantize.reduce_range_choice).

What each kept node costs is measured, not estimated: the all-int8 file and every step of the
search are timed side by side (interleaved rounds), and the cost of node k is the latency of step k
minus that of step k-1.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from edgekit.runtime.quantize import Int8Dynamic, quantize_file, quantized_matmuls, resolve_reduce_range

INT8_DYNAMIC = Int8Dynamic(per_channel=True)  # the file this module refines, and every trial of the search


def drops(reference: dict[str, float], quantized: dict[str, float]) -> dict[str, float]:
    """Per task, how much of the reference metric the quantized file lost, in % (negative: it gained)."""
    return {task: 100.0 * (reference[task] - quantized[task]) / abs(reference[task]) if reference[task] else 0.0
            for task in reference}


def _output_error(session, feeds: list[dict], reference: list[list]) -> float:
    """Mean relative L2 distance of every float output to the fp32 file's, over the feeds."""
    import numpy as np

    errors = []
    for feed, expected in zip(feeds, reference):
        for got, want in zip(session.run(None, feed), expected):
            if np.issubdtype(want.dtype, np.floating):
                errors.append(float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-12)))
    return float(np.mean(errors)) if errors else 0.0


def node_sensitivity(src: Path, nodes: list[str], feeds: list[dict], folder: Path,
                     reduce_range: bool | Literal["auto"] | None = None) -> list[dict]:
    """[{"node", "error"}], most sensitive first: each node quantized alone (int8-dynamic with
    `reduce_range`, as quantize_file takes it), its outputs' error to fp32."""
    from edgekit.runtime.providers import SessionSettings, create_session

    fp32, _ = create_session(src, SessionSettings())
    names = [i.name for i in fp32.get_inputs()]
    feeds = [{name: feed[name] for name in names} for feed in feeds]
    reference = [fp32.run(None, feed) for feed in feeds]
    ranking = []
    for node in nodes:
        trial = folder / "sensitivity.onnx"
        quantize_file(src, trial, INT8_DYNAMIC, only=[node], reduce_range=reduce_range)
        session, _ = create_session(trial, SessionSettings())
        ranking.append({"node": node, "error": _output_error(session, feeds, reference)})
    return sorted(ranking, key=lambda entry: -entry["error"])


def fit_allowed_drop(src: Path, dst: Path, max_drop: float, score: Callable[[Path], dict[str, float]],
                     feeds: list[dict], time_files: Callable[[list[Path]], list[dict]],
                     echo: Callable[[str], None], reduce_range: bool | Literal["auto"] | None = None) -> dict:
    """Make `dst` (an int8-dynamic copy of `src`) lose at most `max_drop` % on every task.

    `score(path)` -> {task: metric} (higher is better); `feeds`: inputs for the sensitivity pass;
    `time_files(paths)` -> one latency summary ({"p50", "p95", ...}) per path, measured side by side.
    `reduce_range`: the setting dst was quantized with (quantize_file's: True, False, or None/"auto"
    for this CPU's choice); every trial file is made with it, and the record says which was used.
    dst is replaced by the file that fits (or left all-int8 when even keeping every MatMul in fp32
    does not fit). Returns the record of the search (JSON-able).
    """
    setting, used, _ = resolve_reduce_range(reduce_range)
    reference = score(src)
    first = score(dst)
    record = {"max_drop": max_drop, "reduce_range_setting": setting, "reduce_range": used, "fp32_metrics": reference,
              "all_int8": {"metrics": first, "drops": drops(reference, first)}}
    worst = max(record["all_int8"]["drops"].values())
    if worst <= max_drop:
        return record | {"fits": True, "kept_fp32": [], "drops": record["all_int8"]["drops"]}
    nodes = quantized_matmuls(dst)
    echo(f"    {dst.name}: all-int8 loses {worst:.2f}% (allowed {max_drop:g}%): ranking {len(nodes)} MatMuls "
         "by their quantization error")
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.mixed-", dir=dst.parent) as tmp:
        folder = Path(tmp)
        ranking = node_sensitivity(src, nodes, feeds, folder, reduce_range=used)
        steps, fitted = [], None
        for k in range(1, len(ranking) + 1):
            kept = [entry["node"] for entry in ranking[:k]]
            path = folder / f"keep{k}.onnx"
            quantize_file(src, path, INT8_DYNAMIC, keep_fp32=kept, reduce_range=used)
            metrics = score(path)
            lost = drops(reference, metrics)
            steps.append({"kept": k, "metrics": metrics, "drops": lost, "path": path})
            echo(f"    keeping {k} in fp32 (+{kept[-1]}): worst loss {max(lost.values()):.2f}%")
            if max(lost.values()) <= max_drop:
                fitted = steps[-1]
                break
        latencies = time_files([dst] + [step["path"] for step in steps])
        previous = latencies[0]
        for entry, step, latency in zip(ranking, steps, latencies[1:]):
            entry["cost_ms"] = {p: latency[p] - previous[p] for p in ("p50", "p95")}
            entry["metrics_after"], entry["drops_after"] = step["metrics"], step["drops"]
            previous = latency
        record |= {"sensitivity": ranking, "all_int8_latency_ms": {p: latencies[0][p] for p in ("p50", "p95")},
                   "fits": fitted is not None}
        if fitted is None:
            return record | {"kept_fp32": [], "drops": record["all_int8"]["drops"]}
        shutil.move(str(fitted["path"]), dst)  # same folder: a rename, dst is never half-written
    kept = ranking[:fitted["kept"]]
    record |= {"kept_fp32": [entry["node"] for entry in kept], "drops": fitted["drops"],
               "latency_ms": {p: latencies[fitted["kept"]][p] for p in ("p50", "p95")}}
    echo(f"    {dst.name}: {len(kept)} MatMul(s) kept in fp32, worst loss {max(fitted['drops'].values()):.2f}%, "
         f"+{record['latency_ms']['p50'] - record['all_int8_latency_ms']['p50']:.3f} ms p50")
    return record
