"""Which file meets the budget, which ones are worth considering, which one to ship,
and what would make a miss fit.

A file meets the budget when its measured latency at the budget's percentile is at
most the budget less its headroom (10% by default: re-timing the same file on a shared
host moves its p95 by ~7%), its size at most the size budget, if any, and it keeps at
least `min_retention` % of the teacher on every task the floor covers, if one is set. Among those, the
pick keeps the most of the teacher on its WORST task (one student serves every
task, so its weakest task is what a user feels), then the mean retention, then the
lower latency, then the smaller file.

The Pareto frontier is taken over every task's metric (higher is better), the latency
at the budget's percentile and the size (lower is better): a file is on it when no other
file of the same provider is at least as good on all of them and better on one. The
pick is always on the frontier.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError
from edgekit.recipe import Budget


class BudgetNotMet(EdgekitError):
    """No candidate can meet the latency (or size) budget."""

    exit_code = 2


def latency_of(entry: dict, budget: Budget) -> float:
    return entry["latency_ms"][budget.percentile]


def limit_ms(budget: Budget) -> float:
    """The latency a file must measure to count as fitting."""
    return budget.ms * (1 - budget.headroom)


def below_floor(entry: dict, budget: Budget) -> dict[str, float]:
    """{task: % kept} of the tasks where a measured file keeps less of the teacher than budget.min_retention
    asks (an untrained probe has no retention: it is judged on latency and size only)."""
    kept = entry.get("retention") or {}
    return {task: value for task, value in kept.items()
            if value is not None and budget.floor(task) is not None and value < budget.floor(task)}


def meets_budget(entry: dict, budget: Budget) -> bool:
    size_ok = budget.size_mb is None or entry["size_bytes"] / 1e6 <= budget.size_mb
    return latency_of(entry, budget) <= limit_ms(budget) and size_ok and not below_floor(entry, budget)


def retention(metrics: dict, teacher_metrics: dict) -> dict[str, float | None]:
    """Student metric as a percentage of the teacher's, per task (None where the teacher
    scores <= 0 and a ratio means nothing)."""
    return {task: (100.0 * m["value"] / teacher_metrics[task]["value"]) if teacher_metrics[task]["value"] > 0
            else None for task, m in metrics.items()}


def _rank(entry: dict, budget: Budget) -> tuple:
    kept = [v for v in entry["retention"].values() if v is not None] or [0.0]
    return (min(kept), sum(kept) / len(kept), -latency_of(entry, budget), -entry["size_bytes"])


def pick(entries: list[dict], budget: Budget) -> dict | None:
    """The file to ship among `entries` (one provider's), or None when none meets the budget.

    Only frontier files compete: a file that dominates a fitting one also fits, and
    retention ignores tasks the teacher scores <= 0, so the rank alone could tie a
    dominated file with the one dominating it."""
    front = pareto_front(entries, budget)
    feasible = [e for e in entries if meets_budget(e, budget) and e["name"] in front]
    return max(feasible, key=lambda e: _rank(e, budget)) if feasible else None


def _objectives(entry: dict, budget: Budget) -> tuple:
    """Every objective as 'higher is better'."""
    return (*(m["value"] for m in entry["metrics"].values()), -latency_of(entry, budget), -entry["size_bytes"])


def pareto_front(entries: list[dict], budget: Budget) -> set[str]:
    """Names of the entries no other entry dominates (compare entries of one provider only)."""
    scored = [(e["name"], _objectives(e, budget)) for e in entries]
    return {name for name, mine in scored
            if not any(all(o >= m for o, m in zip(other, mine)) and other != mine for _, other in scored)}


def shape_text(budget: Budget, text: bool = True, provider: str | None = None) -> str:
    seq = ("the task's own text lengths, " if budget.seq_len == "task" else f"seq {budget.seq_len}, ") if text else ""
    return f"batch {budget.batch}, {seq}on {provider or budget.providers[0]} with {budget.threads} thread(s)"


def closest_miss(entries: list[dict], budget: Budget, what: str, int8: bool, provider: str | None = None) -> str:
    """Why nothing fits, naming the fastest of `entries` and the changes that would fit it
    (`int8`: whether int8 variants were already among them)."""
    fastest = min(entries, key=lambda e: latency_of(e, budget))
    latency = latency_of(fastest, budget)
    ms = f"{budget.percentile} <= {budget.ms:g} ms"
    if budget.speedup is not None:
        ms = (f"{budget.percentile} <= {budget.ms:.3g} ms (x{budget.speedup:g}: the teacher's fp32 file measures "
              f"{budget.teacher_ms:.3g} ms here)")
    if budget.headroom:
        ms += f" with {budget.headroom:.0%} headroom (<= {limit_ms(budget):.3g} ms measured)"
    image = "width" in (fastest.get("architecture") or {})  # the teacher's files have none
    lines = [f"no {what} meets {ms} at {shape_text(budget, not image, provider)}."]
    if latency > limit_ms(budget):
        lines.append(f"The fastest, {fastest['name']}, measures {budget.percentile} {latency:.3g} ms.")
        if budget.speedup is None:
            fixes = [f"raise budget.ms to at least {latency / (1 - budget.headroom):.3g}"]
        else:
            fixes = [f"lower budget.speedup to at most {budget.teacher_ms * (1 - budget.headroom) / latency:.3g}"]
        if isinstance(budget.seq_len, int) and not image:
            # Transformer latency grows about linearly with tokens at these lengths (FIELD-NOTES).
            fixes.append(f"shorten budget.seq_len to about {int(budget.seq_len * limit_ms(budget) / latency)} tokens")
        if image:
            fixes.append("add narrower or shallower students (students.widths / students.depths)")
        else:
            fixes.append("add narrower students (students.hidden, e.g. [192]) or fewer layers (students.layers)")
        if not int8:
            fixes.append("allow int8 variants (quantize.variants: [int8-dynamic])")
        fixes.append("or raise budget.threads if the device has the cores")
        lines.append("To fit: " + "; ".join(fixes) + ".")
    fast = [e for e in entries if latency_of(e, budget) <= limit_ms(budget) and "retention" in e]
    if fast and all(below_floor(e, budget) for e in fast):
        best = max(fast, key=lambda e: min(v for v in e["retention"].values() if v is not None))
        lost = ", ".join(f"{task} {kept:.1f}% < {budget.floor(task):g}%" for task, kept in below_floor(best, budget).items())
        lines.append(f"{len(fast)} file(s) meet the latency, but none keeps budget.min_retention on every task: the "
                     f"closest, {best['name']}, keeps {lost}. To close the gap: train longer (distill.epochs), add "
                     "unlabeled in-domain text (distill.unlabeled, e.g. the task's own texts split into sentences), "
                     "distill more students (students.max_students) or a larger one (students.layers) if one is "
                     "feasible, loosen the latency budget so a larger student fits, or lower budget.min_retention.")
    if budget.size_mb is not None:
        smallest = min(entries, key=lambda e: e["size_bytes"])
        if smallest["size_bytes"] / 1e6 > budget.size_mb:
            lines.append(f"The smallest file, {smallest['name']}, is {smallest['size_bytes'] / 1e6:.1f} MB > "
                         f"budget.size_mb {budget.size_mb:g}: raise it, or add smaller students.")
    return " ".join(lines)
