"""The run's records, typed: what one stage builds and another (or report.json's reader) reads.

They stay dicts (TypedDicts), as report.json holds them: a record read back from an older report.json or from the
cache is the same object a run builds, and json.dumps writes it as it is. The type says which keys there are, what
each holds, and who sets it.
"""

from __future__ import annotations

from typing import TypedDict


class Row(TypedDict, total=False):
    """One cell of the evaluation matrix (report.json `files[]`): a file on a provider."""

    name: str  # "<student>-<variant>", e.g. "L3-int8-dynamic"
    student: str  # "teacher" or a candidate's name
    variant: str  # "fp32" or a quantize method
    provider: str
    onnx: str  # the file, relative to the run folder
    metrics: dict[str, dict]  # task -> {"metric", "value", "ci95", ...}
    retention: dict[str, float | None]  # task -> % of the teacher's fp32 file
    trivial: dict[str, dict]  # task -> how the file stands against the trivial answer (baselines.against_trivial)
    accuracy_aware: dict  # int8-dynamic files made with quantize.max_drop: the search (precision.py)
    architecture: dict | None
    params: int
    probe_latency_ms: dict | None
    undistilled_metrics: dict
    distillation: dict
    bench: str  # the raw timing, relative to the run folder
    size_bytes: int
    latency_ms: dict  # model only at the budget's shape: p50, p95, p99, mean, ci95, runs, rounds, measured_at, cached
    latency_e2e_ms: dict | None  # the same, text in -> outputs out with the bundle's tokenizer (None: images, web)
    latency_e2e_why: str  # why a text file's row has no end-to-end latency (a web provider: not measured there)
    latency_app_ms: dict | None  # the same as latency_e2e_ms, with the file's app graph (the tokenizer inside) instead
    latency_app_why: str  # why a text file's row has no app-graph latency (its tokenizer, its provider, a mismatch)
    app_graph: dict  # the app graph that was timed: what it is, its tokenization check, its raw timing (app_path)
    end_to_end_path: str  # set by select.decide: the faster end-to-end path, "tokenizer.json" or "app graph"
    agreement: dict  # a web provider's row: how far its outputs are from the same file's on cpu (web_agreement)
    placement: dict | None  # where ORT ran the file's nodes: on the provider or fallen back (providers.placement)
    engine_build_ms: float  # TensorRT: building the file's engine, apart from latency (0 when its cache served)
    timed_on: dict  # the machine that timed it: host, cpu, instruction_sets
    meets_budget: bool  # set by select.decide
    pareto: bool  # set by select.decide


class ProbeEntry(TypedDict, total=False):
    """A candidate timed untrained (probe.probe; report.json `probes[]`)."""

    name: str
    architecture: dict
    params: int
    provider: str
    variants: dict[str, dict]  # probe class ("fp32", "int8-dynamic", ...) -> latency_ms, latency_e2e_ms, size_bytes,
    # meets_budget
    feasible: bool  # at the run's budget, after the best quantization


class Decision(TypedDict, total=False):
    """Why a provider's pick is the file it is (select.choose; report.json `decision[provider]`)."""

    top: str  # the top-ranked fitting file
    ships: str  # the file shipped: the top one, or a faster one tied with it within the margin
    rule: str
    latency: str  # which latency ranked them, in words
    top_latency_ms: float
    top_path: str | None  # end to end: "tokenizer.json" or "app graph" (fits.faster_path)
    ships_path: str | None
    ships_latency_ms: float
    tie_margin: float
    compared: list[dict]  # each faster fitting frontier file against the top: per-task paired differences, tied
    tied: list[str]
    equally_fast: list[str]
    unpaired: list[str]
    by_rank_alone: bool
    trivial: dict[str, str]  # files no better than the trivial answer, and why
    statement: str


class Report(TypedDict, total=False):
    """report.json (`edgekit.report/2`): built by report.build_report, completed by the pipeline (score_scale,
    bundle, executor), read by report.md/.html, `edgekit bundle`, `edgekit verify` and bench/."""

    format: str
    edgekit_version: str
    recipe: dict
    recipe_digest: str
    target: dict | None
    created: str
    seconds: float
    stages_started_s: dict[str, float]
    machine: dict
    versions: dict[str, str]
    budget: dict  # report.budget_record
    providers: dict
    variants: dict
    tasks: list[dict]
    teacher: dict
    provenance: dict
    probes: list[ProbeEntry]
    files: list[Row]
    picks: dict[str, str | None]
    selected: dict | None
    why: str | None
    why_by_provider: dict[str, str]
    decision: dict[str, Decision | None]
    provider_agreement: list[dict]
    gap: dict | None
    score_scale: dict | None
    int8_on_this_cpu: list[dict]
    sweep: list[dict] | None
    bundle: dict | None
    executor: dict
