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

from edgekit.fits import below_floor, latency_of, limit_ms, meets_budget, probe_fits
from edgekit.recipe import Budget


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


def to_train(candidates, probes: dict, budgets: list[Budget], max_students: int) -> list:
    """The students worth distilling: for one budget, the largest feasible candidates up to
    max_students (the larger the student, the more of the teacher it keeps); for a sweep, the
    largest feasible candidate of each budget, so every budget gets its likely pick for the cost
    of at most one student per budget."""
    by_size = sorted(candidates, key=lambda c: -probes[c.name]["params"])
    chosen = []
    for budget in budgets:
        feasible = [c for c in by_size if probe_fits(probes[c.name], budget)]
        chosen += [c for c in feasible[:max_students if len(budgets) == 1 else 1] if c not in chosen]
    return chosen


def pick_on(rows: list[dict], budget: Budget, provider: str, int8: bool) -> tuple[dict | None, str | None]:
    """(the pick among `provider`'s rows, None) or (None, why nothing fits)."""
    mine = [r for r in rows if r["provider"] == provider]
    best = pick(mine, budget)
    return best, None if best or not mine else closest_miss(mine, budget, "file", int8, provider)


def decide(rows: list[dict], budget: Budget, providers: list[str], int8: bool) -> tuple[list[dict], dict, dict]:
    """Per provider, the Pareto frontier and the pick: (the rows with meets_budget and pareto set,
    {provider: picked row name or None}, {provider: why nothing fits})."""
    fronts = {p: pareto_front([r for r in rows if r["provider"] == p], budget) for p in providers}
    rows = [row | {"meets_budget": meets_budget(row, budget), "pareto": row["name"] in fronts[row["provider"]]}
            for row in rows]
    picks, why = {}, {}
    for provider in providers:
        best, text = pick_on(rows, budget, provider, int8)
        picks[provider] = best["name"] if best else None
        if text:
            why[provider] = text
    return rows, picks, why


def sweep_point(rows: list[dict], budget: Budget, provider: str, int8: bool) -> dict:
    """The pick at one budget of a sweep, among the files measured once for all of them."""
    best, why = pick_on(rows, budget, provider, int8)
    return {"budget": budget.label(), "ms": budget.ms, "speedup": budget.speedup, "limit_ms": limit_ms(budget),
            "provider": provider,
            "pick": best["name"] if best else None,
            "latency_ms": latency_of(best, budget) if best else None,
            "size_bytes": best["size_bytes"] if best else None,
            "metrics": {t: m["value"] for t, m in best["metrics"].items()} if best else None,
            "retention": best["retention"] if best else None,
            "min_retention": min((v for v in best["retention"].values() if v is not None), default=None)
            if best else None,
            "why": why}


def nothing_feasible(probes: dict, budget: Budget, int8: bool) -> str:
    """Why no candidate is worth training: the closest miss among every probed variant, and what would fit."""
    entries = [{"name": f"{name} ({variant})", "architecture": p["architecture"], **record}
               for name, p in probes.items() for variant, record in p["variants"].items()]
    return closest_miss(entries, budget, "candidate", int8) + " Nothing was trained or written."

