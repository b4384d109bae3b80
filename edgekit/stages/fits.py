"""Whether a measurement fits a budget: the arithmetic every stage that judges a timing shares.

A file meets the budget when its measured latency at the budget's percentile is at most the
budget less its headroom, its size at most budget.size_mb (if set), it keeps at least budget.min_retention %
of the teacher on every task the floor covers, it is better than the trivial answer on every task
(edgekit.data.baselines), and, with budget.require_full_placement, its provider ran every node itself. A probe (an
untrained candidate) has no metrics and no placement record: it is judged on latency and size only.
"""

from __future__ import annotations

from edgekit.recipe import Budget
from edgekit.runtime.providers import provider_name

# The two ways a text file ships end to end, each with the row field its latency is in (text in -> outputs out, timed
# alike on the tasks' test texts): the bundle's tokenizer.json then the file, or the file's app graph with the
# tokenizer inside (edgekit/runtime/app_graph.py; measured where onnxruntime-extensions' op runs and matches tokenizer.json).
END_TO_END_PATHS = {"tokenizer.json": "latency_e2e_ms", "app graph": "latency_app_ms"}
PATH_WORDS = {"tokenizer.json": "tokenizer.json + model.onnx", "app graph": "model.app.onnx, tokenizer inside"}


def path_latency(entry: dict | None, path: str, percentile: str) -> float | None:
    """A file's end-to-end latency at `percentile` on one path ("tokenizer.json" or "app graph"), or None where it
    was not measured (or a report.json read back holds no number there)."""
    value = ((entry or {}).get(END_TO_END_PATHS[path]) or {}).get(percentile)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def faster_path(entry: dict | None, percentile: str) -> tuple[str, float] | None:
    """(path, latency) of the file's faster end-to-end path at `percentile` (tokenizer.json on a tie), or None where
    neither was measured (images, a web provider, an older report)."""
    found = [(path, v) for path in END_TO_END_PATHS if (v := path_latency(entry, path, percentile)) is not None]
    return min(found, key=lambda item: item[1]) if found else None


def latency_of(entry: dict, budget: Budget) -> float:
    """The latency the budget bounds: model only, or text in to outputs out (budget.scope) on the file's faster
    path (faster_path): what an app that ships the file the faster way pays. The teacher's reference is its own
    faster path too, so a speed-up is the best shipping of each against the best shipping of the teacher."""
    if budget.scope == "end-to-end" and (found := faster_path(entry, budget.percentile)):
        return found[1]
    return entry[budget.latency_key][budget.percentile]


def app_latency(entry: dict, budget: Budget) -> float:
    """The latency an app pays for a request at the budget's percentile: end to end (text in to outputs out, the
    faster path) where it was measured, else the budget's own (model only for images)."""
    found = faster_path(entry, budget.percentile)
    return found[1] if found else latency_of(entry, budget)


def limit_ms(budget: Budget) -> float:
    """The latency a file must measure to count as fitting."""
    return budget.ms * (1 - budget.headroom)


def below_floor(entry: dict, budget: Budget) -> dict[str, float]:
    """{task: % kept} of the tasks where a measured file keeps less of the teacher than budget.min_retention
    asks (an untrained probe has no retention: it is judged on latency and size only)."""
    kept = entry.get("retention") or {}
    return {task: value for task, value in kept.items()
            if value is not None and budget.floor(task) is not None and value < budget.floor(task)}


def below_trivial(entry: dict) -> dict[str, str]:
    """{task: why} of the tasks where a measured file is no better than the trivial answer (edgekit.data.baselines):
    such a file never ships. A probe has no metrics: it is judged on latency and size only."""
    return {task: record["why"] for task, record in (entry.get("trivial") or {}).items() if not record["ships"]}


def partly_placed(entry: dict, budget: Budget) -> str | None:
    """Why a measured file breaks budget.require_full_placement (some nodes fell back to another provider, or
    its placement is unknown), or None. A probe carries no placement record: it is judged on latency alone."""
    if not budget.require_full_placement or "placement" not in entry:
        return None
    if provider_name(entry["provider"]) == "CPUExecutionProvider":
        return None  # the provider every other one falls back to runs every node itself
    record = entry["placement"] or {}
    if not record.get("recorded"):
        return f"its placement is unknown ({record.get('why', 'not recorded')})"
    if not record["full"]:
        fell = sum(record["fallback"].values())
        ops = ", ".join(f"{op} x{n}" for op, n in record["fallback_op_types"].items())
        return f"{fell} of its {record['nodes']} nodes fell back from {record['provider']} ({ops})"
    return None


def meets_budget(entry: dict, budget: Budget) -> bool:
    size_ok = budget.size_mb is None or entry["size_bytes"] / 1e6 <= budget.size_mb
    return (latency_of(entry, budget) <= limit_ms(budget) and size_ok and not below_floor(entry, budget)
            and not below_trivial(entry) and partly_placed(entry, budget) is None)


def retention(metrics: dict, teacher_metrics: dict) -> dict[str, float | None]:
    """Student metric as a percentage of the teacher's, per task (None where the teacher
    scores <= 0 and a ratio means nothing)."""
    return {task: (100.0 * m["value"] / teacher_metrics[task]["value"]) if teacher_metrics[task]["value"] > 0
            else None for task, m in metrics.items()}


def probe_fits(entry: dict, budget: Budget) -> bool:
    """Whether any variant of a probed candidate meets `budget`."""
    return any(meets_budget(record, budget) for record in entry["variants"].values())
