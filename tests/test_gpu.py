"""GPU (CUDA and TensorRT): fp16 files made and measured there, TensorRT's engine build timed apart from latency and
its cache reused by a second run, one pick per provider, a CUDA that fails to load still an error, and edgekit's
harness against a plain onnxruntime loop on CUDA.

Every test is marked `gpu` (deselected by the default `make test`) and skips, with the reason, where CUDA or
TensorRT cannot run a session: a GPU machine needs onnxruntime-gpu in place of onnxruntime (docs/quantize-and-providers.md, GPUs).
Run them with `make test-gpu`, or bench/gpu_check.sh on a lent GPU machine (where a skip is a failure).
"""

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
PROVIDERS = ["cuda", "tensorrt", "cpu"]
ORT_NAMES = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU = ("cuda", "tensorrt")


@functools.cache
def not_working(provider: str) -> str | None:
    """Why `provider` cannot run a session here, or None when it can. onnxruntime-gpu lists CUDA and TensorRT
    whether or not their libraries (cuDNN, TensorRT's own) load, and ORT then falls back to the CPU provider
    with a warning: a real session on a tiny graph, run once, decides."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    wanted = ORT_NAMES[provider]
    if wanted not in ort.get_available_providers():
        return (f"{wanted} is not in this onnxruntime ({ort.__version__}: {', '.join(ort.get_available_providers())})"
                "; a GPU machine needs onnxruntime-gpu in place of onnxruntime (docs/quantize-and-providers.md, GPUs)")
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8]) for name in ("x", "y"))
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], [0.5] * 64)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gate", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # every onnxruntime-gpu since 1.10 reads it
    chain = [wanted, *(["CUDAExecutionProvider"] if provider == "tensorrt" else []), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=chain)
        session.run(None, {"x": np.ones((1, 8), dtype=np.float32)})
    except Exception as e:  # noqa: BLE001 - ORT's own exception types
        return f"{wanted} is listed but cannot run a session: {str(e).strip().splitlines()[0]}"
    if wanted not in session.get_providers():
        return (f"{wanted} is listed but its libraries did not load (the session got {session.get_providers()}); "
                "see ORT's warning above")
    return None


def require(*providers: str) -> None:
    """Skip, with the reason, where a provider cannot run; under bench/gpu_check.sh (EDGEKIT_GPU_CHECK=1) fail
    instead: the GPU check must not pass by skipping everything it is there to check."""
    reasons = [reason for reason in map(not_working, providers) if reason]
    if reasons:
        (pytest.fail if os.environ.get("EDGEKIT_GPU_CHECK") == "1" else pytest.skip)("; ".join(reasons))


@pytest.fixture(scope="session")
def gpu():
    """Session-scoped, so it is set up (and skips) before the tiny teacher is built."""
    require(*GPU)


@pytest.fixture(scope="session")
def cuda():
    require("cuda")


def engine_files(folder: Path) -> dict[str, tuple[int, int]]:
    """{engine file: (size, mtime)}: an engine rebuilt under the same name shows as a changed entry."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.engine"))}


@pytest.fixture(scope="module")
def gpu_runs(gpu, tiny_bert, tmp_path_factory):
    """The tiny pipeline on cuda, tensorrt and cpu with int8-dynamic and fp16 files, run twice on one cache.
    Returns (first, second, run folder), each run as (report.json, {(name, provider): its bench json}, the engine
    files in the cache after it)."""
    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    root = tmp_path_factory.mktemp("gpu")
    out, cache = root / "run", root / "cache"

    def run(min_runs: int):
        # One timing round: the row keeps its median round's figures, and of three rounds only the first
        # builds an engine, so engine_build_ms > 0 would hold for a third of the rows.
        recipe = tiny_recipe(tiny_bert, budget={"providers": PROVIDERS, "rounds": 1, "min_runs": min_runs},
                             quantize={"variants": ["int8-dynamic", "fp16"]})
        distill_and_export(recipe, out=out, cache_dir=cache, force=True, echo=print)
        report = json.loads((out / "report.json").read_text())
        benches = {(row["name"], row["provider"]): json.loads((out / row["bench"]).read_text())
                   for row in report["files"]}
        return report, benches, engine_files(cache / "tensorrt-engines")

    first = run(50)
    # Another min_runs, so the second run times every file again (the same settings would take the timings from
    # the cache, with no session at all) on the engines the first run built. The files come from the export cache
    # under the same names, and TensorRT names an engine after the file's name and its graph's tensor names (not
    # its folder, which is a fresh temporary one per run).
    second = run(60)
    return first, second, out


def rows_on(report: dict, provider: str) -> list[dict]:
    return [row for row in report["files"] if row["provider"] == provider]


# ---------------------------------------------------------------------------- the tiny pipeline

def test_fp16_files_are_made_and_measured_on_cuda_and_tensorrt_only(gpu_runs):
    # setup
    import onnx
    from onnx import TensorProto

    (report, _, _), _, out = gpu_runs
    fp16 = [row for row in report["files"] if row["variant"] == "fp16"]
    # assert: made (not skipped as on a CPU-only machine), for the teacher and the student, on both GPU providers
    assert report["variants"] == {"made": ["fp32", "int8-dynamic", "fp16"], "skipped": {}}
    assert sorted((row["student"], row["provider"]) for row in fp16) == sorted(
        (student, provider) for student in ("teacher", "L1") for provider in GPU)
    for row in fp16:
        weights = onnx.load(str(out / row["onnx"])).graph.initializer
        assert any(w.data_type == TensorProto.FLOAT16 for w in weights), f"{row['onnx']} has no fp16 weights"


def test_every_file_is_scored_and_timed_on_every_provider_it_runs_on(gpu_runs):
    # setup: every file on every provider, but fp16 on the GPU providers only
    (report, benches, _), _, _ = gpu_runs
    made = report["variants"]["made"]
    expected = {(student, variant, provider) for student in ("teacher", "L1") for variant in made
                for provider in PROVIDERS if variant != "fp16" or provider in GPU}
    # assert: nothing skipped, no cell missing, every cell measured on the provider it names
    assert report["providers"]["measured"] == PROVIDERS and report["providers"]["skipped"] == {}
    assert {(row["student"], row["variant"], row["provider"]) for row in report["files"]} == expected
    for row in report["files"]:
        cell = f"{row['name']} on {row['provider']}"
        assert set(row["metrics"]) == {"sentiment", "pairs"}, cell
        assert all(math.isfinite(m["value"]) for m in row["metrics"].values()), cell
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"], cell
        assert row["latency_e2e_ms"]["p95"] > 0, cell
        session = benches[(row["name"], row["provider"])]["session"]
        assert session["session_providers"][0] == ORT_NAMES[row["provider"]], cell
        if row["provider"] in GPU and (row.get("placement") or {}).get("recorded"):
            assert row["placement"]["provider"] == ORT_NAMES[row["provider"]], cell
            assert row["placement"]["on_provider"] > 0, f"{cell}: no node ran on the provider"


def test_tensorrt_engine_build_is_timed_apart_from_latency(gpu_runs):
    # setup
    (report, benches, engines), _, _ = gpu_runs
    tensorrt = rows_on(report, "tensorrt")
    # assert: each file's engine was built in this first run, into the run cache, and not counted as latency
    assert len(tensorrt) == 6 and engines
    for row in tensorrt:
        engine = benches[(row["name"], "tensorrt")]["engine"]
        assert engine["cache"].endswith("tensorrt-engines") and engine["built"], row["name"]
        assert row["engine_build_ms"] == engine["build_ms"] > 0, row["name"]
        # Seconds of building against a fraction of a millisecond per run: folded in, it would show.
        assert row["latency_ms"]["p99"] < row["engine_build_ms"], row["name"]


def test_a_second_run_on_the_same_cache_builds_no_engine(gpu_runs):
    # setup
    (_, _, engines), (report, benches, engines_again), _ = gpu_runs
    tensorrt = rows_on(report, "tensorrt")
    # assert: every file timed again (not a cached figure), each on the engine the first run built
    assert len(tensorrt) == 6
    for row in tensorrt:
        assert row["latency_ms"]["cached"] is False, row["name"]
        assert benches[(row["name"], "tensorrt")]["engine"]["built"] == [], row["name"]
        assert row["engine_build_ms"] == 0, row["name"]
    assert engines_again == engines  # no engine file added or rewritten


def test_each_provider_gets_its_own_pick_and_the_first_is_the_target(gpu_runs):
    # setup
    (report, _, _), _, _ = gpu_runs
    # assert: the loose budget fits every file, so each provider picks one of its own rows
    assert set(report["picks"]) == set(PROVIDERS)
    for provider, name in report["picks"].items():
        assert name in {row["name"] for row in rows_on(report, provider)}, provider
    assert report["selected"]["provider"] == "cuda"


# ---------------------------------------------------------------------------- a CUDA that fails to load

def test_cuda_that_fails_to_load_is_a_provider_unavailable_not_a_cpu_timing(cuda, tiny_bert_onnx):
    # setup: CUDA works in this process; a child that sees no GPU gets a CUDA provider that cannot start, and
    # onnxruntime's Python wrapper then retries on the CPU provider with only a printed warning
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-c", "from edgekit.cli import main; main()", "bench", str(tiny_bert_onnx),
               "--provider", "cuda", "--min-runs", "5", "--min-seconds", "0"]
    # execute
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    # assert: edgekit's ProviderUnavailable, printed without a traceback, and no timing on another provider
    assert result.returncode == 1, output
    assert "CUDAExecutionProvider" in output and "Fix" in output, output
    assert "fell back to CPUExecutionProvider" in output or "failed to start a session" in output, output
    assert "Traceback" not in output and "p50" not in output, output


# ---------------------------------------------------------------------------- the harness on CUDA

def test_edgekit_bench_on_cuda_is_within_10_percent_of_a_plain_onnxruntime_loop(cuda, tmp_path):
    # setup: the harness as it is run, from the repo root (where `bench` imports)
    command = [sys.executable, "-m", "bench.harness_vs_plain_ort", "--quick", "--provider", "cuda",
               "--results", str(tmp_path)]
    # execute: the exported all-MiniLM-L6-v2 teacher, interleaved rounds, both sides on CUDA
    run = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO, timeout=600)
    written = list(tmp_path.glob("*-harness-cuda.json"))
    assert written, run.stdout + run.stderr
    result = json.loads(written[0].read_text())
    # assert
    assert result["provider"] == "CUDAExecutionProvider"
    assert all(r["edgekit_session_providers"][0] == "CUDAExecutionProvider" for r in result["rounds"])
    ratios = [r["ratio_edgekit_to_plain"] for r in result["rounds"]]
    assert result["checks"]["p50_within_10pct_of_plain_ort"], f"edgekit p50 / plain ORT p50 per round: {ratios}"


# ---------------------------------------------------------------------------- the quick recipe (last: minutes)

@pytest.mark.slow
def test_the_quick_recipe_makes_fp16_rows_on_cuda_and_tensorrt(gpu, tmp_path):
    # setup: recipes/minilm-multitask-quick.yaml as it is, on the three providers, with an fp16 variant
    from edgekit.pipeline import distill_and_export
    from edgekit.stages.loading import recipe_from_dict

    path = REPO / "recipes" / "minilm-multitask-quick.yaml"
    data = yaml.safe_load(path.read_text())
    data["budget"]["providers"] = PROVIDERS
    data["quantize"] = {**data.get("quantize", {}), "variants": ["int8-dynamic", "fp16"]}
    recipe = recipe_from_dict(data, str(path), folder=path.parent)
    # execute
    distill_and_export(recipe, out=tmp_path / "run", cache_dir=tmp_path / "cache", echo=print)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    # assert
    assert report["providers"]["skipped"] == {}
    fp16 = {(row["student"], row["provider"]): row for row in report["files"] if row["variant"] == "fp16"}
    students = {row["student"] for row in report["files"]}
    assert set(fp16) == {(student, provider) for student in students for provider in GPU}
    for (student, provider), row in fp16.items():
        assert set(row["metrics"]) == {"sentiment", "pairs"} and row["latency_ms"]["p95"] > 0, (student, provider)
    assert set(report["picks"]) == set(PROVIDERS)
