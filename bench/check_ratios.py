"""Re-time the ONNX files of a `python -m bench` table with plain onnxruntime and check its latency ratios.

`python -m bench` writes bench/results/<date>-<cpu>.json (format edgekit.bench/1): the latency of a
teacher exported with Optimum, its int8 copy and small student files, and for each file the ratios
baseline/this of its p95 and p50 at the fixed shape "seq128" (batch `batch`, sequence `seq_len`),
against the teacher fp32 and teacher int8 baselines named in `baselines`. Absolute milliseconds
depend on the machine and its load; the ratios are the claim that should travel, so they are what
this script reproduces.

It is an independent witness: nothing here imports edgekit or the rest of bench (only the standard
library, numpy and onnxruntime), so a bug in edgekit's harness cannot hide in the code that checks it.
For every entry of kind "onnx" (others are reported as skipped) it opens a CPUExecutionProvider session
with `threads` intra-op threads, 1 inter-op thread, no spinning and the default graph optimization;
feeds int64 [batch, seq_len] arrays (input_ids random in [1000, 30000) from a fixed seed, the same for
every file; attention_mask ones; token_type_ids zeros); warms up 10 runs; then, in R interleaved rounds
(the file order rotates each round), times N runs per file with time.perf_counter around session.run.
Per file the samples of all rounds are pooled into p50 and p95 (numpy.percentile), and each recomputed
ratio must be within --tolerance (relative) of the one in the JSON.

Prints a table and writes <stem>-check-ratios.md and <stem>-check-ratios.json next to the results file.
Exits 0 if every ratio agrees, 1 on any MISMATCH, 2 on bad input (missing file, malformed JSON, a graph
input other than input_ids / attention_mask / token_type_ids).

    python -m bench.check_ratios bench/results/<date>-<cpu>.json [--runs 300] [--rounds 3] [--tolerance 0.10]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

SHAPE = "seq128"  # the fixed shape whose ratios are re-timed
WARMUP = 10
SEED = 0
RATIO_KEYS = ("fp32_over_this_p95", "int8_over_this_p95", "fp32_over_this_p50", "int8_over_this_p50")
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BadInput(Exception):
    """The results file, or a file it names, cannot be checked (exit 2)."""


def make_feed(batch: int, seq_len: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """The arrays every file gets: the same token ids for all of them."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1000, 30000, size=(batch, seq_len), dtype=np.int64),
            "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
            "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64)}


def open_session(path: Path, threads: int, feed: dict[str, np.ndarray]) -> tuple[ort.InferenceSession, dict]:
    """A plain CPU session and the part of `feed` its graph asks for; warmed up."""
    if not path.is_file():
        raise BadInput(f"missing file: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types; all mean "cannot load"
        raise BadInput(f"{path}: onnxruntime cannot load it: {_one_line(exc)}") from None
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in feed]
    if unknown:
        raise BadInput(f"{path}: unknown graph input {unknown[0]!r} (expected only {', '.join(KNOWN_INPUTS)})")
    own_feed = {n: feed[n] for n in names}
    try:
        for _ in range(WARMUP):
            session.run(None, own_feed)
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{path}: onnxruntime cannot run it on int64 {list(feed['input_ids'].shape)}: "
                       f"{_one_line(exc)}") from None
    return session, own_feed


def time_files(paths: list[Path], *, threads: int, batch: int, seq_len: int, runs: int, rounds: int,
               seed: int = SEED) -> list[list[list[float]]]:
    """Latency samples in ms, indexed [file][round][run]; the files are interleaved round by round."""
    feed = make_feed(batch, seq_len, seed)
    opened = [open_session(p, threads, feed) for p in paths]  # all loaded (and checked) before any timing
    samples: list[list[list[float]]] = [[] for _ in paths]
    n = len(paths)
    for r in range(rounds):
        order = [(r + k) % n for k in range(n)]  # rotate so no file always runs first, or right after another
        for i in order:
            session, own_feed = opened[i]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, own_feed)
                times.append((time.perf_counter() - start) * 1e3)
            samples[i].append(times)
    return samples


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _require(mapping: object, key: str, where: str) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise BadInput(f"{where}: missing key {key!r}")
    return mapping[key]


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{where}: expected a positive integer, got {value!r}")
    return value


def _number_or_none(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{where}: expected a number, got {value!r}")
    return float(value)


def load_results(path: Path) -> dict:
    """The parts of a bench results file that this check needs, validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"missing file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it: {_one_line(exc)}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: malformed results: the top level is not an object")
    where = str(path)
    threads = _positive_int(_require(data, "threads", where), f"{where}: threads")
    batch = _positive_int(_require(data, "batch", where), f"{where}: batch")
    seq_len = _positive_int(_require(data, "seq_len", where), f"{where}: seq_len")
    baselines = _require(data, "baselines", where)
    fp32_name = _require(baselines, "fp32", f"{where}: baselines")
    int8_name = _require(baselines, "int8", f"{where}: baselines")
    entries = _require(data, "entries", where)
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{where}: entries: expected a non-empty list")
    root = Path(data["root"]) if isinstance(data.get("root"), str) else Path.cwd()

    onnx_rows, skipped = [], []
    for k, entry in enumerate(entries):
        name = _require(entry, "name", f"{where}: entries[{k}]")
        if entry.get("kind") != "onnx":
            skipped.append({"name": name, "kind": entry.get("kind")})
            continue
        file = _require(entry, "file", f"{where}: entry {name!r}")
        if not isinstance(file, str) or not file:
            raise BadInput(f"{where}: entry {name!r}: file: expected a path, got {file!r}")
        resolved = Path(file) if Path(file).is_absolute() else root / file
        ratios = (entry.get("ratios") or {}).get(SHAPE) or {}
        latency = (entry.get("latency_ms") or {}).get(SHAPE) or {}
        onnx_rows.append({
            "name": name, "file": file, "path": resolved,
            "their_p50": _number_or_none(latency.get("p50"), f"{where}: entry {name!r}: latency_ms.{SHAPE}.p50"),
            "their_p95": _number_or_none(latency.get("p95"), f"{where}: entry {name!r}: latency_ms.{SHAPE}.p95"),
            "their": {key: _number_or_none(ratios.get(key), f"{where}: entry {name!r}: ratios.{SHAPE}.{key}")
                      for key in RATIO_KEYS},
        })
    names = [r["name"] for r in onnx_rows]
    for label, wanted in (("fp32", fp32_name), ("int8", int8_name)):
        count = names.count(wanted)
        if count != 1:
            problem = "no onnx entry" if count == 0 else f"{count} onnx entries"
            raise BadInput(f"{where}: baselines.{label} is {wanted!r}, but there is {problem} by that name")
    missing = [str(r["path"]) for r in onnx_rows if not r["path"].is_file()]
    if missing:
        raise BadInput(f"missing file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return {"threads": threads, "batch": batch, "seq_len": seq_len, "fp32": fp32_name, "int8": int8_name,
            "rows": onnx_rows, "skipped": skipped, "root": str(root)}


def compare(mine: float, theirs: float | None, tolerance: float) -> dict:
    """One ratio: ok when |mine/theirs - 1| <= tolerance; n/a when the table gives none."""
    if theirs is None:
        return {"mine": mine, "theirs": None, "rel_diff": None, "verdict": "n/a"}
    if not (theirs > 0 and math.isfinite(theirs)):
        return {"mine": mine, "theirs": theirs, "rel_diff": None, "verdict": "MISMATCH"}
    rel = abs(mine / theirs - 1.0)
    return {"mine": mine, "theirs": theirs, "rel_diff": rel, "verdict": "ok" if rel <= tolerance else "MISMATCH"}


def check(results: dict, *, runs: int, rounds: int, tolerance: float) -> list[dict]:
    """Re-time every onnx file and compare its ratios; one row per file."""
    rows = results["rows"]
    samples = time_files([r["path"] for r in rows], threads=results["threads"], batch=results["batch"],
                         seq_len=results["seq_len"], runs=runs, rounds=rounds)
    for row, per_round in zip(rows, samples):
        pooled = np.concatenate([np.asarray(s) for s in per_round])
        row["my_p50"] = float(np.percentile(pooled, 50))
        row["my_p95"] = float(np.percentile(pooled, 95))
        row["my_rounds"] = [{"p50": float(np.percentile(s, 50)), "p95": float(np.percentile(s, 95))}
                            for s in per_round]
        row["samples"] = int(pooled.size)
    base = {label: next(r for r in rows if r["name"] == results[label]) for label in ("fp32", "int8")}
    for row in rows:
        row["ratios"] = {}
        for label in ("fp32", "int8"):
            for q in ("p95", "p50"):
                key = f"{label}_over_this_{q}"
                mine = base[label][f"my_{q}"] / row[f"my_{q}"]
                row["ratios"][key] = compare(mine, row["their"][key], tolerance)
        verdicts = {c["verdict"] for c in row["ratios"].values()}
        row["verdict"] = "MISMATCH" if "MISMATCH" in verdicts else ("ok" if "ok" in verdicts else "n/a")
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["file", "their p95 ms", "my p95 ms", "fp32/this p95 (their / mine)", "int8/this p95 (their / mine)",
              "fp32/this p50 (their / mine)", "int8/this p50 (their / mine)", "verdict"]
    body = []
    for row in rows:
        cells = [row["name"], _fmt(row["their_p95"]), _fmt(row["my_p95"])]
        for key in ("fp32_over_this_p95", "int8_over_this_p95", "fp32_over_this_p50", "int8_over_this_p50"):
            c = row["ratios"][key]
            flag = " !" if c["verdict"] == "MISMATCH" else ""
            cells.append(f"{_fmt(c['theirs'], 3)} / {_fmt(c['mine'], 3)}{flag}")
        cells.append(row["verdict"])
        body.append(cells)
    return header, body


def _mismatch_lines(rows: list[dict], tolerance: float) -> list[str]:
    lines = []
    for row in rows:
        bad = [f"{key} theirs {_fmt(c['theirs'], 3)} mine {_fmt(c['mine'], 3)}"
               + (f" ({c['rel_diff']:.0%} off)" if c["rel_diff"] is not None else " (not a positive ratio)")
               for key, c in row["ratios"].items() if c["verdict"] == "MISMATCH"]
        if bad:
            lines.append(f"MISMATCH {row['name']} ({row['file']}): " + "; ".join(bad) + f" [tolerance {tolerance:.0%}]")
    return lines


def write_markdown(path: Path, source: Path, results: dict, rows: list[dict], args: argparse.Namespace,
                   summary: str, mismatches: list[str]) -> None:
    header, body = table(rows)
    command = (f"`python -m bench.check_ratios {source} --runs {args.runs} --rounds {args.rounds} "
               f"--tolerance {args.tolerance}`")
    settings = (f"Shape {SHAPE}: batch {results['batch']}, sequence {results['seq_len']}; {results['threads']} "
                f"intra-op thread(s), CPUExecutionProvider, onnxruntime {ort.__version__}; {args.rounds} interleaved "
                f"rounds of {args.runs} timed runs per file (after {WARMUP} warm-up runs), pooled. Baselines: fp32 = "
                f"{results['fp32']!r}, int8 = {results['int8']!r}. A ratio is ok when |mine/theirs - 1| <= "
                f"{args.tolerance}. Absolute milliseconds are shown for reference only; they are not compared.")
    lines = [f"# Latency ratios of {source.name}, re-timed with plain onnxruntime", "", command, "", settings, "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    lines += ["", "Files:", ""] + [f"- {r['name']}: `{r['file']}`" for r in rows]
    if results["skipped"]:
        lines += ["", "Skipped (not onnx): " + ", ".join(f"{s['name']} ({s['kind']})" for s in results["skipped"])]
    lines += ["", summary]
    if mismatches:
        lines += [""] + [f"- {m}" for m in mismatches]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check_ratios", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a bench results file (bench/results/<date>-<cpu>.json)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per file per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="relative tolerance on each ratio (default 0.10)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rounds < 1 or not args.tolerance >= 0:
        parser.error("--runs and --rounds must be >= 1 and --tolerance >= 0")
    try:
        results = load_results(args.results)
        rows = check(results, runs=args.runs, rounds=args.rounds, tolerance=args.tolerance)
    except BadInput as exc:
        print(f"check_ratios: error: {exc}", file=sys.stderr)
        return 2

    header, body = table(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for cells in body:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    for s in results["skipped"]:
        print(f"skipped (kind {s['kind']}, not onnx): {s['name']}")
    mismatches = _mismatch_lines(rows, args.tolerance)
    for line in mismatches:
        print(line)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("ok", "MISMATCH", "n/a")}
    summary = (f"{len(rows)} onnx files: {counts['ok']} ok, {counts['MISMATCH']} mismatch, {counts['n/a']} without "
               f"ratios to check; {len(results['skipped'])} entries skipped")
    print(summary)

    stem = args.results.with_suffix("")
    md_path = stem.with_name(stem.name + "-check-ratios.md")
    json_path = stem.with_name(stem.name + "-check-ratios.json")
    write_markdown(md_path, args.results, results, rows, args, summary, mismatches)
    record = {
        "check": "check_ratios", "results": str(args.results), "shape": SHAPE,
        "batch": results["batch"], "seq_len": results["seq_len"], "threads": results["threads"],
        "runs": args.runs, "rounds": args.rounds, "warmup": WARMUP, "seed": SEED, "tolerance": args.tolerance,
        "onnxruntime": ort.__version__, "baselines": {"fp32": results["fp32"], "int8": results["int8"]},
        "root": results["root"],
        "files": [{"name": r["name"], "file": r["file"], "path": str(r["path"]), "samples": r["samples"],
                   "their_p50_ms": r["their_p50"], "their_p95_ms": r["their_p95"],
                   "my_p50_ms": r["my_p50"], "my_p95_ms": r["my_p95"], "my_rounds_ms": r["my_rounds"],
                   "ratios": r["ratios"], "verdict": r["verdict"]} for r in rows],
        "skipped": results["skipped"],
        "ok": counts["MISMATCH"] == 0,
    }
    json_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {md_path} and {json_path}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
