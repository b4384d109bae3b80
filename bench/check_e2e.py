"""Re-time a run's end-to-end figures independently and check the speed-ups its report claims.

`edgekit distill-and-export` times every text file end to end (text in, outputs out, one text per call) on up to
two paths: tokenizer.json then the file (`latency_e2e_ms`), and the file's app graph with the tokenizer inside
(`latency_app_ms`, RUN/<row's app_graph.onnx>). The claim that should travel is the ratio to the teacher's fp32
file, so this script re-times the teacher's fp32 file and the chosen files in ONE process, interleaved round by
round (the file order rotates each round), and compares each ratio, teacher fp32 (its faster path, as the report
divides) over the file on each of its paths, with the report's.

It is an independent witness: nothing here imports edgekit (only the standard library, numpy, onnxruntime,
tokenizers and onnxruntime-extensions), so a bug in edgekit's harness cannot hide in the code that checks it.
- Texts: the pool the run timed, the same texts for every file: the lines of the `inputs.source` file its
  end-to-end timings name (one text per line, stripped, blank lines dropped, as edgekit reads them) at the
  recorded `inputs.pool.indices`, checked against the recorded sha256 (bad input when the file has changed). With
  --texts FILE, or a run that recorded no pool: a fixed-seed draw of min(--runs, lines) distinct lines.
- tokenizer.json path: RUN/tokenizer/tokenizer.json through the Rust `tokenizers` library, truncated at the
  recorded max length, then int64 input_ids / attention_mask / token_type_ids (zeros), whichever the graph takes.
- app graph path: a numpy string array of the text into the graph, onnxruntime-extensions' ops registered.
- Sessions: CPUExecutionProvider, the run's thread count, 1 inter-op thread, no spinning, default optimizations.
- Per file and path: 10 warm-up calls, then per round --runs calls rounded up to whole passes over the pool, from
  its first text (as edgekit times every round), timed with time.perf_counter around the tokenizer and
  session.run; p50 and p95 (numpy.percentile) of every round's samples pooled. Whole passes make every file's
  percentile one over the same texts, each as often, whatever its speed.

    python -m bench.check_e2e RUN [--files NAME ...] [--runs 300] [--rounds 3] [--tolerance 0.15]

By default it checks the teacher's fp32 file, the run's pick and the fastest file end to end that keeps at least
the budget's min_retention on every task. Prints a table, writes RUN/check-e2e.{md,json}; exits 0 when every ratio
agrees within --tolerance (relative, either way:
max(re-timed / claimed, claimed / re-timed) - 1), 1 on any MISMATCH, 2 on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

WARMUP = 10
SEED = 0
PATHS = {"tokenizer.json": "latency_e2e_ms", "app graph": "latency_app_ms"}


class BadInput(Exception):
    """The run, or a file it names, cannot be checked (exit 2)."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: {e}") from e


def faster(row: dict, percentile: str) -> tuple[str, float] | None:
    found = [(path, row[key][percentile]) for path, key in PATHS.items() if row.get(key)]
    return min(found, key=lambda item: item[1]) if found else None


def default_files(report: dict) -> list[str]:
    """The teacher's fp32 file, the pick, and the fastest file end to end that keeps min_retention everywhere."""
    percentile = report["budget"]["percentile"]
    floor = report["budget"].get("min_retention") or 0
    rows = [r for r in report["files"] if r["provider"] == "cpu" and faster(r, percentile)]
    keeping = [r for r in rows if r.get("retention") and min(r["retention"].values()) >= floor]
    names = ["teacher-fp32", (report.get("selected") or {}).get("name")]
    if keeping:
        names.append(min(keeping, key=lambda r: faster(r, percentile)[1])["name"])
    return list(dict.fromkeys(n for n in names if n))


def _session(path: Path, threads: int, extensions: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if extensions:
        from onnxruntime_extensions import get_library_path

        options.register_custom_ops_library(get_library_path())
    if not path.is_file():
        raise BadInput(f"{path} is missing")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def request_for(run: Path, row: dict, path: str, threads: int, max_length: int):
    """`call(text)`: one end-to-end request of the row's file on `path`."""
    if path == "app graph":
        session = _session(run / row["app_graph"]["onnx"], threads, extensions=True)
        name = session.get_inputs()[0].name
        return lambda text: session.run(None, {name: np.array([text], dtype=object)})
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(run / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    session = _session(run / row["onnx"], threads, extensions=False)
    wanted = [i.name for i in session.get_inputs()]

    def call(text: str):
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        columns = {"input_ids": ids, "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
                   "token_type_ids": np.zeros_like(ids)}
        return session.run(None, {name: columns[name] for name in wanted})

    return call


def passes_of(runs: int, pool: int) -> int:
    """Calls per round: `runs` rounded up to whole passes over a pool of `pool` texts."""
    return -(-max(runs, 1) // pool) * pool


def time_requests(calls: dict[str, object], texts: list[str], runs: int, rounds: int) -> dict[str, np.ndarray]:
    """Samples (ms) per entry: warm-up, then `runs` calls per round rounded up to whole passes over `texts`,
    entries interleaved and rotated each round."""
    order = list(calls)
    samples = {key: [] for key in order}
    for key in order:
        for i in range(WARMUP):
            calls[key](texts[i % len(texts)])
    for r in range(rounds):
        for key in order[r % len(order):] + order[:r % len(order)]:
            call = calls[key]
            for i in range(passes_of(runs, len(texts))):
                text = texts[i % len(texts)]
                start = time.perf_counter()
                call(text)
                samples[key].append((time.perf_counter() - start) * 1000)
    return {key: np.asarray(values) for key, values in samples.items()}


def pool_digest(texts: list[str]) -> str:
    """sha256 of the texts in order, each followed by a NUL byte: how edgekit records its pool's."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def run_pool(lines: list[str], pool: dict, texts_file: Path) -> list[str]:
    """The texts the run timed, in its order: `lines` at the recorded indices, checked against the recorded digest."""
    indices = pool.get("indices")
    if not isinstance(indices, list) or not all(isinstance(i, int) and 0 <= i < len(lines) for i in indices):
        raise BadInput(f"the run's pool indices do not fit the {len(lines)} texts of {texts_file}; pass --texts FILE")
    texts = [lines[i] for i in indices]
    if pool_digest(texts) != pool.get("sha256"):
        raise BadInput(f"{texts_file} changed since the run: the texts at its pool's indices are not the ones it "
                       "timed (sha256 differs); pass --texts FILE to time other texts")
    return texts


def check(run: Path, names: list[str] | None, runs: int, rounds: int, tolerance: float,
          texts_file: Path | None) -> dict:
    report = _read_json(run / "report.json")
    budget = report["budget"]
    percentile = budget["percentile"]
    rows = {r["name"]: r for r in report["files"] if r["provider"] == "cpu"}
    names = names or default_files(report)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise BadInput(f"{run / 'report.json'} has no cpu file named {', '.join(unknown)}")
    if "teacher-fp32" not in names:
        names = ["teacher-fp32", *names]
    pool = None
    if texts_file is None:
        timed = _read_json(run / Path(rows["teacher-fp32"]["bench"]).with_suffix("").with_suffix(".e2e.bench.json"))
        texts_file = Path(timed["inputs"]["source"])
        max_length = timed["inputs"]["truncated_at"]
        pool = timed["inputs"].get("pool")
    else:
        max_length = report["teacher"].get("max_length") or 128
    try:
        lines = [line.strip() for line in texts_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except OSError as e:
        raise BadInput(f"{texts_file}: {e}; pass --texts FILE (one text per line)") from e
    if not lines:
        raise BadInput(f"{texts_file} holds no text; pass --texts FILE (one text per line)")
    if pool:
        texts, drawn = run_pool(lines, pool, texts_file), "the run's pool (sha256 checked)"
    else:
        chosen = np.random.default_rng(SEED).choice(len(lines), size=min(max(runs, 1), len(lines)), replace=False)
        texts, drawn = [lines[i] for i in chosen], f"a seeded draw of {len(chosen)} distinct lines"
    threads = budget.get("threads") or 1
    calls = {(name, path): request_for(run, rows[name], path, threads, max_length)
             for name in names for path, key in PATHS.items() if rows[name].get(key)}
    samples = time_requests(calls, texts, runs, rounds)
    measured = {key: float(np.percentile(values, int(percentile[1:]))) for key, values in samples.items()}
    teacher_claimed = faster(rows["teacher-fp32"], percentile)
    teacher_path = teacher_claimed[0]
    teacher_now = measured[("teacher-fp32", teacher_path)]
    entries = []
    for (name, path), ms in measured.items():
        claimed_ms = rows[name][PATHS[path]][percentile]
        claimed, now = teacher_claimed[1] / claimed_ms, teacher_now / ms
        entries.append({"file": name, "path": path, "claimed_ms": claimed_ms, "measured_ms": ms,
                        "p50_ms": float(np.percentile(samples[(name, path)], 50)), "claimed_ratio": claimed,
                        "measured_ratio": now,
                        # symmetric: a claim 10x too high is as wrong as one 10x too low
                        "agrees": max(now / claimed, claimed / now) - 1 <= tolerance})
    return {"run": str(run), "percentile": percentile, "teacher_path": teacher_path, "texts": str(texts_file),
            "pool": {"texts": len(texts), "drawn": drawn, "sha256": pool_digest(texts)},
            "runs": passes_of(runs, len(texts)), "rounds": rounds, "threads": threads, "tolerance": tolerance,
            "onnxruntime": ort.__version__, "entries": entries}


def markdown(result: dict) -> str:
    p = result["percentile"]
    lines = [(f"Re-timed end to end in one process ({result['rounds']} interleaved rounds x {result['runs']} calls, "
             f"whole passes over {result['pool']['texts']} texts: {result['pool']['drawn']}; "
             f"{result['threads']} thread(s), onnxruntime {result['onnxruntime']}); ratios are the teacher fp32 "
             f"file on its faster path ({result['teacher_path']}) over each file, at {p}."), "",
             (f"| file | path | report {p} (ms) | re-timed {p} (ms) | re-timed p50 (ms) | report x | re-timed x | "
             f"within {result['tolerance']:.0%} |"), "|---|---|---|---|---|---|---|---|"]
    for e in result["entries"]:
        lines.append(f"| {e['file']} | {e['path']} | {e['claimed_ms']:.3g} | {e['measured_ms']:.3g} | "
                     f"{e['p50_ms']:.3g} | {e['claimed_ratio']:.1f}x | {e['measured_ratio']:.1f}x | "
                     f"{'yes' if e['agrees'] else 'MISMATCH'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a distill-and-export output folder (with report.json)")
    parser.add_argument("--files", nargs="+", help="file names of report.json (default: teacher, pick, fastest)")
    parser.add_argument("--runs", type=int, default=300, help="timed calls per file, path and round (at least: "
                        "rounded up to whole passes over the texts)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.15, help="relative ratio tolerance")
    parser.add_argument("--texts", type=Path, help="texts to time (one per line; default: the run's own)")
    args = parser.parse_args(argv)
    try:
        result = check(args.run, args.files, args.runs, args.rounds, args.tolerance, args.texts)
    except BadInput as e:
        print(f"check_e2e: {e}", file=sys.stderr)
        return 2
    text = markdown(result)
    print(text, end="")
    (args.run / "check-e2e.md").write_text(text, encoding="utf-8")
    (args.run / "check-e2e.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0 if all(e["agrees"] for e in result["entries"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
