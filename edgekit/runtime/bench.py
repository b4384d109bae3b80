"""Latency of an ONNX file on an ONNX Runtime provider, measured so a p95/p99 means something.

Warm-up first, then timed runs until BOTH a minimum count (hundreds: a p99 from
20 runs is one sample) and a minimum wall time are reached, and a pass over the
inputs ends. Inputs are either a fixed shape or follow the real token-length
distribution of a data file (a pool of its texts, the same for every file). The
result records everything needed to compare or reproduce it: the session options
and the providers ORT actually used, the CPU and its instruction sets, versions,
cold-start costs, peak memory and every raw sample.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgekit import __version__
from edgekit.errors import BenchConfigError
from edgekit.modeling.models import read_config
from edgekit.names import TOKENIZER_FILES
from edgekit.runtime.environment import cpu_info, package_versions
from edgekit.runtime.providers import SessionSettings, create_session, placement_text
from edgekit.trust.provenance import sha256_file

DEFAULT_SEQ_LEN = 128
# Real texts: every round of every file is timed over whole passes of one pool of batches (run_benchmark), so
# every file's percentiles are over the same texts, each as often: a 33 ms teacher and a 0.2 ms student alike.
# The pool holds min(min_runs, POOL_SIZE) batches (fewer when the source has fewer texts), one text from each
# of that many equal slices of the texts sorted by token length: it keeps their length distribution (the tasks'
# short snippets and long documents in proportion), and a file slow enough to stop at min_runs still makes one
# whole pass in about min_runs runs (the demo's teacher: 100 calls of 33 ms per round, as before whole passes).
POOL_SIZE = 256
_NUMPY_TYPES = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32",
                "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(bool)": "bool"}


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field("cpu", description="execution provider: cpu, cuda, tensorrt, ... or a full ORT name")
    provider_options: dict[str, str] = Field(default_factory=dict, description="the provider's own ONNX Runtime "
                                             "options (e.g. OpenVINO's device_type: GPU)")
    engine_cache: str | None = Field(None, description="folder TensorRT keeps its built engines in: the build is "
                                                       "timed apart, once per file, not in the latency")
    threads: int = Field(1, ge=1, description="intra-op threads (1 repeats within ~3% on a shared host)")
    allow_spinning: bool | None = Field(None, description="ORT worker spinning; None keeps ORT's default")
    batch: int | None = Field(None, ge=1, description="batch size for a dynamic batch axis (default 1)")
    seq_len: int | None = Field(None, ge=1, description=f"fixed sequence length (default {DEFAULT_SEQ_LEN})")
    lengths_from: str | None = Field(None, description="texts whose token lengths the inputs follow")
    text_column: str = Field("text", description="column/field of the texts in a CSV/JSONL file")
    tokenizer: str | None = Field(None, description="tokenizer folder; default: the ONNX file's folder")
    max_length: int | None = Field(None, ge=1, description="truncate --lengths-from texts here (default: "
                                                           "the model's limit)")
    dims: dict[str, int] = Field(default_factory=dict, description="values for other symbolic dimensions")
    warmup_runs: int = Field(10, ge=0, description="untimed runs after the first (cold) one")
    min_runs: int = Field(500, ge=1, description="timed runs at least (hundreds for a stable p99)")
    min_seconds: float = Field(5.0, ge=0, description="timed wall time at least")
    seed: int = Field(0, description="seed for synthetic inputs, length sampling and the bootstrap")
    end_to_end: bool = Field(False, description="time text in -> outputs out: each timed call tokenizes a batch "
                                                "of the lengths_from texts with the tokenizer the model ships "
                                                "(its tokenizer.json, as an app calls it) and runs the model; a "
                                                "graph that takes strings (tokenizer inside) is fed the texts")


def dim_kind(dim) -> str | None:
    text = str(dim).lower()
    if "batch" in text:
        return "batch"
    if "seq" in text or "length" in text or "token" in text:
        return "seq"
    return None


def _config_dims(config: dict) -> dict[str, int]:
    """Image exports leave channels/height/width symbolic: the model's config knows them."""
    if "image_size" not in config:
        return {}
    return {"num_channels": config.get("num_channels", 3), "height": config["image_size"],
            "width": config["image_size"]}


def _synthetic(meta, shape: list[int], vocab: int, rng):
    import numpy as np

    dtype = _NUMPY_TYPES.get(meta.type)
    if dtype is None:
        raise BenchConfigError(f"input '{meta.name}' has type {meta.type}, which edgekit cannot synthesize; "
                               "benchmark a model with int/float/bool inputs.")
    name = meta.name.lower()
    if dtype == "bool" or "mask" in name:
        return np.ones(shape, dtype=dtype)
    if "position" in name:
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if dtype.startswith("int"):
        if "type" in name:
            return np.zeros(shape, dtype=dtype)
        return rng.integers(0, vocab, size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def _resolve_shape(meta, config: BenchConfig, seq_len: int | None) -> list[int]:
    shape = []
    for axis, dim in enumerate(meta.shape):
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in config.dims:
            shape.append(config.dims[dim])
        elif dim_kind(dim) == "batch":
            shape.append(config.batch or 1)
        elif dim_kind(dim) == "seq" and seq_len is not None:
            shape.append(seq_len)
        else:
            label = dim or f"{meta.name}[{axis}]"
            raise BenchConfigError(f"input '{meta.name}' has a free dimension '{label}' that edgekit cannot "
                                   f"guess: set it with --dim {label}=VALUE.")
    return shape


def _check_options_apply(inputs, config: BenchConfig) -> None:
    """--batch/--seq-len on a graph without such an axis would time a shape the user did not ask for."""
    kinds = {dim_kind(d) for meta in inputs for d in meta.shape if not isinstance(d, int)}
    shapes = {meta.name: meta.shape for meta in inputs}
    for option, kind, value in (("--batch", "batch", config.batch), ("--seq-len", "seq", config.seq_len),
                                ("--lengths-from", "seq", config.lengths_from)):
        if value is not None and kind not in kinds and not _takes_text(inputs):
            raise BenchConfigError(f"{option} was given but the model has no dynamic {kind} axis "
                                   f"(its inputs: {shapes}). Drop {option}, or benchmark a dynamic-shape export.")


def _takes_text(inputs) -> bool:
    """A graph with the tokenizer inside (onnxruntime-extensions) takes a batch of strings."""
    return any(meta.type == "tensor(string)" for meta in inputs)


def _text_pool(config: BenchConfig, folder: Path, rng) -> tuple[object, list[list[str]], dict]:
    """(tokenizer, the pool: batches of real texts (POOL_SIZE's comment), a record of the texts and the pool)."""
    from edgekit.modeling.models import load_tokenizer, max_text_length

    option = "--end-to-end" if config.end_to_end else "--lengths-from"
    if config.tokenizer is None and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise BenchConfigError(f"{option} needs the model's tokenizer and there is none beside the model "
                               f"in {folder}: pass --tokenizer FOLDER (or a hub id).")
    tokenizer = load_tokenizer(config.tokenizer or str(folder))
    max_length = config.max_length or max_text_length(tokenizer, folder)
    texts, lengths = _texts_and_lengths(tokenizer, config.tokenizer or str(folder), config.lengths_from,
                                        config.text_column, max_length)
    batch = config.batch or 1
    size = max(1, min(POOL_SIZE, config.min_runs, len(texts) // batch))  # batches
    picked = _stratified(lengths, size * batch, rng)
    batches = [[texts[i] for i in picked[j:j + batch]] for j in range(0, len(picked), batch)]
    record = {"mode": "lengths_from", "source": config.lengths_from, "texts": len(texts),
              "truncated_at": max_length, "token_lengths": _length_stats(lengths),
              "pool": {"batches": size, "texts": len(picked),
                       "drawn": f"length-stratified: one text from each of {len(picked)} equal slices of the "
                                f"{len(texts)} texts sorted by token length, in a seeded random order",
                       "indices": picked, "sha256": pool_digest([texts[i] for i in picked]),
                       "token_lengths": _length_stats(lengths[picked])}}
    return tokenizer, batches, record


def _length_stats(lengths) -> dict:
    import numpy as np

    return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())}


def _stratified(lengths, k: int, rng) -> list[int]:
    """k indices of texts: the middle one of each of k equal slices of the texts in token-length order (some twice
    when k exceeds the texts), shuffled with `rng` so no length trend lines up with time within a round."""
    import numpy as np

    order = np.argsort(lengths, kind="stable")
    return [int(i) for i in rng.permutation(order[((np.arange(k) + 0.5) * len(order) / k).astype(int)])]


def pool_digest(texts: list[str]) -> str:
    """sha256 of the pool's texts in timing order, each followed by a NUL byte (bench/check_e2e.py checks it)."""
    import hashlib

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


_POOLS: dict[tuple, tuple[list[str], object]] = {}  # (tokenizer, texts file and its state, column, cut) -> texts


def _texts_and_lengths(tokenizer, tokenizer_source: str, source: str, column: str, max_length: int) -> tuple:
    """(the texts of `source`, their token lengths): read and tokenized once per process for the same tokenizer,
    file (its size and modification time) and cut. A run times every file on the same texts, and tokenizing all
    of them each time took 10 s of the demo's run on 2 cores."""
    from edgekit.data import load_texts
    from edgekit.runtime.feeds import token_lengths

    path = Path(source)
    state = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    key = (tokenizer_source, source, state, column, max_length)
    if key not in _POOLS:
        texts = load_texts(source, column)
        _POOLS.clear()  # one pool at a time: a process times one run's texts
        _POOLS[key] = (texts, token_lengths(tokenizer, texts, max_length))
    return _POOLS[key]


def _length_feeds(inputs, config: BenchConfig, folder: Path, rng) -> tuple[list[dict], dict]:
    """A pool of batches of real texts, so lengths (and padding) follow the data."""
    from edgekit.runtime.feeds import text_feeds

    tokenizer, batches, record = _text_pool(config, folder, rng)
    max_length = record["truncated_at"]
    feeds = []
    for texts in batches:
        encoded = text_feeds(tokenizer, texts, max_length)
        seq = encoded["input_ids"].shape[1]
        feeds.append({meta.name: encoded[meta.name].astype(_NUMPY_TYPES[meta.type]) if meta.name in encoded
                      else _synthetic(meta, _resolve_shape(meta, config, seq), tokenizer.vocab_size, rng)
                      for meta in inputs})
    return feeds, record


def end_to_end_requests(session, onnx_path: Path, config: BenchConfig) -> tuple[list, object, dict]:
    """(the pool's batches of real texts, `request(texts) -> outputs`, a record): what one timed call of
    --end-to-end does, text in to outputs out: the shipped tokenizer (feeds.app_encoder) then the model, or
    the texts straight into a graph with the tokenizer inside."""
    import numpy as np

    from edgekit.runtime.feeds import app_encoder

    if not config.lengths_from:
        raise BenchConfigError("--end-to-end times real texts: pass --lengths-from TEXTS (a file or a built-in "
                               "such as rotten_tomatoes).")
    inputs = session.get_inputs()
    tokenizer, batches, record = _text_pool(config, onnx_path.parent, np.random.default_rng(config.seed))
    run = session.run
    if _takes_text(inputs):
        name = next(meta.name for meta in inputs if meta.type == "tensor(string)")

        def request(texts):
            return run(None, {name: np.array(texts, dtype=object)})

        what = "inside the graph"
    else:
        names = tuple(meta.name for meta in inputs)
        unknown = [n for n in names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown:
            raise BenchConfigError(f"--end-to-end feeds input_ids, attention_mask and token_type_ids; the model "
                                   f"also takes {unknown}: time it model-only (without --end-to-end).")
        encode, what = app_encoder(tokenizer, record["truncated_at"], names)

        def request(texts):
            return run(None, encode(texts))

    record |= {"mode": "end_to_end", "tokenizer": what, "batch": config.batch or 1}
    return batches, request, record


def build_feeds(session, onnx_path: Path, config: BenchConfig) -> tuple[list[dict], dict]:
    """The input batches timed runs cycle through, and a record of what they are."""
    import numpy as np

    rng = np.random.default_rng(config.seed)
    model_config = read_config(onnx_path.parent)
    config = config.model_copy(update={"dims": _config_dims(model_config) | config.dims})
    inputs = session.get_inputs()
    _check_options_apply(inputs, config)
    if config.lengths_from:
        feeds, record = _length_feeds(inputs, config, onnx_path.parent, rng)
    else:
        has_seq = any(dim_kind(d) == "seq" for meta in inputs for d in meta.shape if not isinstance(d, int))
        seq_len = (config.seq_len or DEFAULT_SEQ_LEN) if has_seq else None
        # Token ids must stay inside the embedding table.
        vocab = model_config.get("vocab_size", 100)
        feeds = [{meta.name: _synthetic(meta, _resolve_shape(meta, config, seq_len), vocab, rng) for meta in inputs}]
        record = {"mode": "fixed", "seq_len": seq_len, "pool": {"batches": 1, "drawn": "one synthetic batch"}}
    record["batch"] = config.batch or 1
    record["shapes"] = {name: list(value.shape) for name, value in feeds[0].items()}
    return feeds, record


def latency_stats(samples_ms, seed: int = 0, resamples: int = 1000) -> dict:
    """Percentiles and moments, with bootstrap 95% confidence intervals of p50, p95 and p99
    (a budget on p95 should be judged against its interval, not a point)."""
    import numpy as np

    x = np.asarray(samples_ms, dtype=np.float64)
    quantiles, with_ci = (50, 90, 95, 99), (50, 95, 99)
    rng = np.random.default_rng(seed)
    boot = []
    chunk = max(1, 5_000_000 // len(x))  # bounds the resample matrix to ~40 MB
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        boot.append(np.percentile(x[rng.integers(0, len(x), size=(n, len(x)))], with_ci, axis=1).T)
    boot = np.concatenate(boot)  # (resamples, len(with_ci))
    stats = dict(zip((f"p{q}" for q in quantiles), np.percentile(x, quantiles)))
    stats |= {"mean": x.mean(), "std": x.std(ddof=1) if len(x) > 1 else 0.0, "min": x.min(), "max": x.max()}
    low, high = np.percentile(boot, (2.5, 97.5), axis=0)
    return {k: float(v) for k, v in stats.items()} | {
        "ci95": {f"p{q}": [float(lo), float(hi)] for q, lo, hi in zip(with_ci, low, high)}}


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _rss_mb() -> float | None:
    """Resident memory now (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _grew(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _file_size(path: Path) -> int:
    """The .onnx file plus any external-data files beside it that it names (an .ort file is one file)."""
    import onnx

    size = path.stat().st_size
    if path.suffix == ".ort":
        return size
    model = onnx.load(str(path), load_external_data=False)
    external = {entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"}
    return size + sum((path.parent / name).stat().st_size for name in external if (path.parent / name).is_file())


def _engines(folder: str | None) -> dict[str, tuple[int, int]]:
    """{engine file: (size, mtime)} of a TensorRT engine cache folder (empty when there is none): an engine
    rebuilt over an old one changes its stamp, so it counts as built too."""
    if folder is None or not Path(folder).is_dir():
        return {}
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir()
            if p.suffix in (".engine", ".profile", ".timing")}


def _timed_in_page(session, onnx_path: Path, config: BenchConfig) -> tuple[dict, float, object, float]:
    """(inputs record, first run ms, samples ms, timed seconds) of a web session: the same feeds as the native
    providers get, each run timed with performance.now() in the page, so no Python<->browser traffic is in them."""
    import numpy as np

    if config.end_to_end:
        raise BenchConfigError(f"'{onnx_path}' on {config.provider}: end-to-end timing (tokenizer + model) is not "
                               "measured in the browser yet; time it model-only (without --end-to-end).")
    feeds, inputs_record = build_feeds(session, onnx_path, config)
    timed = session.timed_runs(feeds, config.warmup_runs, config.min_runs, config.min_seconds)  # whole passes too
    inputs_record["timed_in"] = ("the browser page: performance.now() around each onnxruntime-web session.run"
                                 + ("" if timed.get("isolated") else " (not cross-origin isolated: coarse clock)"))
    return (inputs_record, float(timed["first_ms"]), np.asarray(timed["samples_ms"], dtype=np.float64),
            float(timed["timed_seconds"]))


def run_benchmark(onnx_path: str | Path, config: BenchConfig | None = None) -> dict:
    """Time `onnx_path` as configured; returns the JSON-ready result."""
    import numpy as np
    import onnxruntime as ort

    config = config or BenchConfig()
    onnx_path = Path(onnx_path)
    if onnx_path.is_dir() and (onnx_path / "model.onnx").is_file():  # an `edgekit export` folder
        onnx_path = onnx_path / "model.onnx"
    # TensorRT names an engine after the file's name and tensors, not its weights: two files called model.onnx
    # (an untrained probe, then the trained student) would share one. A folder per file content keeps them apart.
    engine_cache = str(Path(config.engine_cache) / sha256_file(onnx_path)[:16]) if config.engine_cache else None
    settings = SessionSettings(provider=config.provider, threads=config.threads, allow_spinning=config.allow_spinning,
                               options=tuple(sorted(config.provider_options.items())), engine_cache=engine_cache)
    engines_before = _engines(engine_cache)
    gc.collect()  # garbage freed while the session is made would otherwise count against its memory
    rss_start = _rss_mb()
    start = time.perf_counter()
    session, session_record = create_session(onnx_path, settings)
    create_ms = (time.perf_counter() - start) * 1e3
    rss_session = _rss_mb()
    if hasattr(session, "timed_runs"):  # a web provider: timed inside the browser page (web_runtime.py)
        inputs_record, cold_ms, samples_ms, timed_s = _timed_in_page(session, onnx_path, config)
        rss_feeds = rss_warm = rss_session = rss_start = None  # this process's memory is not the browser's
    else:
        if config.end_to_end:
            feeds, run, inputs_record = end_to_end_requests(session, onnx_path, config)
        else:
            feeds, inputs_record = build_feeds(session, onnx_path, config)
            session_run = session.run

            def run(feed):
                return session_run(None, feed)

        rss_feeds = _rss_mb()
        start = time.perf_counter()
        run(feeds[0])
        cold_ms = (time.perf_counter() - start) * 1e3
        for i in range(config.warmup_runs):  # untimed, and the same first feeds for every file
            run(feeds[i % len(feeds)])
        rss_warm = _rss_mb()

        samples_ns = []
        clock = time.perf_counter_ns
        began = clock()
        deadline = began + int(config.min_seconds * 1e9)
        i = 0
        # Whole passes over the pool: stopping mid-pass would time a slow file on its first texts only and a fast
        # one on every text many times, and their percentiles would be over different texts.
        while i < config.min_runs or clock() < deadline or i % len(feeds):
            feed = feeds[i % len(feeds)]
            t0 = clock()
            run(feed)
            samples_ns.append(clock() - t0)
            i += 1
        timed_s = (clock() - began) / 1e9
        samples_ms = np.array(samples_ns, dtype=np.float64) / 1e6
    pool = inputs_record["pool"]
    passes, rest = divmod(len(samples_ms), pool["batches"])  # rest 0: a round stops only at the end of a pass
    pool["passes"] = len(samples_ms) / pool["batches"] if rest else passes
    pool["timed"] = ("stopped within a pass over the pool" if rest else
                     "whole passes over the pool in every round: each of its batches timed equally often")
    # TensorRT builds an engine per file (and input shape) in the session or at its first run: seconds that are
    # not latency, paid once when the engine cache keeps it. Recorded apart, and 0 when the cache served.
    built = sorted(name for name, stamp in _engines(engine_cache).items() if engines_before.get(name) != stamp)
    engine = None if engine_cache is None else {
        "cache": engine_cache, "built": built, "build_ms": create_ms + cold_ms if built else 0.0}

    return {
        "edgekit_version": __version__,
        "model": {"path": str(onnx_path), "size_bytes": _file_size(onnx_path)},
        "session": session_record,
        "inputs": inputs_record,
        "latency_ms": latency_stats(samples_ms, config.seed),
        "runs": len(samples_ms),
        "warmup_runs": config.warmup_runs,
        "timed_seconds": timed_s,
        "session_create_ms": create_ms,
        "first_inference_ms": cold_ms,
        "engine": engine,
        # What the model costs in memory: the session (weights, optimized graph) and what its
        # first runs allocated (arena, buffers); peak_rss is the whole process (Python, numpy,
        # and the tokenizer with lengths_from).
        "memory_mb": {"session": _grew(rss_start, rss_session), "inference": _grew(rss_feeds, rss_warm),
                      "peak_rss": _peak_rss_mb()},
        "onnxruntime_version": ort.__version__,
        "versions": package_versions(),
        "cpu": cpu_info(),
        "host": platform.node(),  # the machine that timed it (a Ray run times on the target's own node)
        "config": config.model_dump(),
        "samples_ms": [round(float(s), 5) for s in samples_ms],
    }


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _interval(latency: dict, name: str) -> str:
    low, high = latency["ci95"][name]
    return f"{low:.3f}-{high:.3f}"


def summary(result: dict) -> str:
    """A few human-readable lines of a benchmark result."""
    lat, inputs = result["latency_ms"], result["inputs"]
    shape = ", ".join(f"{k} {v}" for k, v in inputs.get("shapes", {}).items())
    if inputs["mode"] in ("lengths_from", "end_to_end"):
        lengths = inputs["token_lengths"]
        shape = (f"batch {inputs['batch']}, token lengths from {inputs['source']} "
                 f"(mean {lengths['mean']:.1f}, p95 {lengths['p95']:.0f}, max {lengths['max']})")
        if "pool" in inputs:
            shape += f", {inputs['pool']['texts']} of its texts timed in whole passes"
    if inputs["mode"] == "end_to_end":
        shape = f"text in -> outputs out (tokenizer: {inputs['tokenizer']}), {shape}"
    cpu, memory = result["cpu"], result["memory_mb"]
    isa = ", ".join(k for k, v in cpu["instruction_sets"].items() if v) or "none detected"
    return "\n".join([
        (f"{result['model']['path']} ({result['model']['size_bytes'] / 2**20:.1f} MiB) on "
         f"{result['session']['session_providers'][0]}, {result['session']['threads']} thread(s); {shape}"),
        (f"p50 {lat['p50']:.3f} ms (95% CI {_interval(lat, 'p50')})  p90 {lat['p90']:.3f}  "
         f"p95 {lat['p95']:.3f} ({_interval(lat, 'p95')})  p99 {lat['p99']:.3f} ({_interval(lat, 'p99')})  "
         f"mean {lat['mean']:.3f} +- {lat['std']:.3f} ms"),
        (f"{result['runs']} timed runs in {result['timed_seconds']:.1f} s after {result['warmup_runs']} warm-up; "
         f"session {result['session_create_ms']:.0f} ms, first inference {result['first_inference_ms']:.1f} ms, "
         f"memory: session {_mb(memory['session'])}, inference {_mb(memory['inference'])}, "
         f"process peak {_mb(memory['peak_rss'])}"),
        f"CPU {cpu['name']} ({isa}); "
        + (result["session"].get("runtime") or f"onnxruntime {result['onnxruntime_version']}") + "; "
        + placement_text(result["session"].get("placement")),
    ])
