"""Which file meets the budget, which ones are worth considering, which one to ship,
and what would make a miss fit.

A file meets the budget when its measured latency at the budget's percentile is at
most the budget less its headroom (10% by default: re-timing the same file on a shared
host moves its p95 by ~7%), its size at most the size budget, if any, and it keeps at
least `min_retention` % of the teacher on every task the floor covers, if one is set. Among those, the
pick keeps the most of the teacher on its WORST task (one student serves every
task, so its weakest task is what a user feels), then the mean retention, then the
lower latency, then the smaller file.

That rank reads differences that are noise as leads. Two files scored on the same ~2.5k test
examples differ by a few examples as often as by a real margin: L1-int8-static-percentile ranked
first on sentiment 0.7322 against L1-int8-dynamic's 0.7310, 3 texts of 2,550, and shipped though it
ran 6.26 ms p95 against 5.89. So the top-ranked file T is then compared with every fitting frontier
file F that is faster (fits.latency_of), task by task, by a paired bootstrap of metric(F) - metric(T)
on the same resampled test examples (edgekit.metrics.paired_difference, RESAMPLES resamples, seed
SEED). F is tied with T when on every task that interval reaches zero or above: T's lead is within
noise, or F is the better one. Among T and its ties the fastest ships, then the smaller: when the data
cannot tell their accuracy apart, the measured latency is the one difference left that the budget
counts (and a faster file has more headroom against the device's re-timing drift), then the bytes
the device must hold. Ties are judged against T alone, so a chain of small losses cannot add up to a
large one. Files whose per-example predictions were not recorded (an older cache) are not compared:
the rank alone places them, and the decision says so.

The Pareto frontier is taken over every task's metric (higher is better), the latency
at the budget's percentile and the size (lower is better): a file is on it when no other
file of the same provider is at least as good on all of them and better on one. The
pick is always on the frontier.
"""

from __future__ import annotations

from edgekit.fits import below_floor, latency_of, limit_ms, meets_budget, partly_placed, probe_fits
from edgekit.recipe import Budget

RESAMPLES = 1000  # paired bootstrap of each task's difference between two files
SEED = 0  # the same resamples every run: a pick does not change between reruns of the same measurements
TIE_RULE = (f"a faster fitting frontier file is tied with the top-ranked one when, on every task, the paired "
            f"bootstrap 95% interval ({RESAMPLES} resamples of the test examples, the same for both files) of its "
            "metric minus the top file's reaches zero or above; among the top file and its ties the fastest ships, "
            "then the smaller")


def _rank(entry: dict, budget: Budget) -> tuple:
    kept = [v for v in entry["retention"].values() if v is not None] or [0.0]
    return (min(kept), sum(kept) / len(kept), -latency_of(entry, budget), -entry["size_bytes"])


def pick(entries: list[dict], budget: Budget, predictions: dict | None = None, tasks=None) -> dict | None:
    """The file to ship among `entries` (one provider's), or None when none meets the budget: choose's file."""
    return choose(entries, budget, predictions, tasks)[0]


def choose(entries: list[dict], budget: Budget, predictions: dict | None = None,
           tasks=None) -> tuple[dict | None, dict | None]:
    """(the file to ship among `entries` (one provider's), the decision) or (None, None) when none meets the
    budget. The decision: the top-ranked file, every faster fitting frontier file compared with it (each
    task's paired difference and interval, tied or not), those tied, those not compared, and a sentence.

    `predictions`: (row name, provider) -> per-task results with their "predictions", as the run collects
    them (measure.Scored.predictions); `tasks`: the loaded TaskData. Without them the rank alone decides.
    Only frontier files compete: a file that dominates a fitting one also fits, and retention ignores
    tasks the teacher scores <= 0, so the rank alone could tie a dominated file with the one dominating it."""
    front = pareto_front(entries, budget)
    feasible = [e for e in entries if meets_budget(e, budget) and e["name"] in front]
    if not feasible:
        return None, None
    top = max(feasible, key=lambda e: _rank(e, budget))
    faster = sorted((e for e in feasible if latency_of(e, budget) < latency_of(top, budget)),
                    key=lambda e: (latency_of(e, budget), e["size_bytes"]))
    golds: dict = {}
    mine = _outcomes(top, predictions, tasks)
    compared, unpaired = [], []
    for entry in faster:
        theirs = None if mine is None else _outcomes(entry, predictions, tasks)
        if theirs is None:
            unpaired.append(entry["name"])
            continue
        differences = {task.name: _difference(task, theirs[task.name], mine[task.name], golds) for task in tasks}
        compared.append({"name": entry["name"], "latency_ms": latency_of(entry, budget),
                         "size_bytes": entry["size_bytes"], "tasks": differences,
                         # an interval that cannot be computed (every resample undefined) shows no tie
                         "tied": all(d["ci95"] is not None and d["ci95"][1] >= 0 for d in differences.values())})
    tied = [next(e for e in faster if e["name"] == c["name"]) for c in compared if c["tied"]]
    best = min([top, *tied], key=lambda e: (latency_of(e, budget), e["size_bytes"]))
    decision = {"top": top["name"], "ships": best["name"], "rule": TIE_RULE, "top_latency_ms": latency_of(top, budget),
                "compared": compared, "tied": [e["name"] for e in tied], "unpaired": unpaired,
                "by_rank_alone": mine is None}
    decision["statement"] = _decision_text(decision, best, budget)
    return best, decision


def _outcomes(entry: dict, predictions: dict | None, tasks) -> dict | None:
    """{task: the file's per-example outcome (n,)} from its recorded predictions; None when any is missing."""
    import numpy as np

    from edgekit.tasks import kind_of

    results = (predictions or {}).get((entry["name"], entry.get("provider")))
    if results is None or not tasks:
        return None
    found = {}
    for task in tasks:
        kind = kind_of(task.spec.kind)
        values = ((results.get(task.name) or {}).get("predictions") or {}).get(kind.prediction)
        if values is None or len(values) != len(task.test[kind.columns[0]]):
            return None  # recorded before, or on another test split: no pairing is possible
        found[task.name] = kind.outcome(np.asarray(values))
    return found


def _difference(task, theirs, mine, golds: dict) -> dict:
    """{"metric", "difference": metric(theirs) - metric(mine), "ci95": its paired 95% interval}."""
    from edgekit.metrics import paired_difference
    from edgekit.tasks import kind_of

    if task.name not in golds:
        golds[task.name] = kind_of(task.spec.kind).gold(task.test)
    found = paired_difference(task.spec.metric, theirs, mine, golds[task.name], seed=SEED, resamples=RESAMPLES)
    return {"metric": task.spec.metric, "difference": found["value"], "ci95": found["ci95"]}


def _differences_text(differences: dict) -> str:
    """'sentiment (-0.0012, paired 95% [-0.004, +0.002]) and lee (...)'."""
    def one(task: str, d: dict) -> str:
        interval = "no interval" if d["ci95"] is None else f"paired 95% [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        return f"{task} ({d['difference']:+.4f}, {interval})"

    return " and ".join(one(task, d) for task, d in differences.items())


def _decision_text(decision: dict, best: dict, budget: Budget) -> str:
    """One sentence: why the shipped file ships rather than the top-ranked one, or why the top one does."""
    unit = f"ms {budget.percentile}" + (" end to end" if budget.scope == "end-to-end" else "")
    top = decision["top"]
    if decision["by_rank_alone"]:
        text = (f"{top}: picked by rank alone (worst-task retention, then mean retention, latency, size): its "
                "per-example predictions were not recorded (an older cache), so no faster file was checked for "
                "a tie within noise.")
        return text
    if best["name"] != top:
        shipped = next(c for c in decision["compared"] if c["name"] == best["name"])
        text = (f"{best['name']}: tied within noise with {top} on {_differences_text(shipped['tasks'])} and faster "
                f"({shipped['latency_ms']:.3g} vs {decision['top_latency_ms']:.3g} {unit}): the faster file ships.")
        others = [name for name in decision["tied"] if name != best["name"]]
        if others:
            text += f" Also tied with {top}, but slower or larger: {', '.join(others)}."
    elif decision["compared"]:
        # the task each faster file trails on by the most, beyond noise
        trails = [f"{c['name']} on {_differences_text({_worst(c): c['tasks'][_worst(c)]})}" for c in decision["compared"]]
        text = (f"{top}: ranked first, and every faster fitting file trails it beyond noise on at least one task: "
                + "; ".join(trails) + ".")
    else:
        text = f"{top}: ranked first, and no fitting frontier file is faster."
    if decision["unpaired"]:
        text += (f" Not compared within noise (their per-example predictions were not recorded): "
                 f"{', '.join(decision['unpaired'])}.")
    return text


def _worst(compared: dict) -> str:
    """The task on which a compared file's interval lies lowest (its clearest loss)."""
    return min(compared["tasks"], key=lambda t: (compared["tasks"][t]["ci95"] or [float("inf")] * 2)[1])


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
    if budget.scope == "end-to-end":
        seq = "text in to outputs out (tokenizer included) on the tasks' test texts, "
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
        if isinstance(budget.seq_len, int) and not image and budget.scope == "model":
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
    placed = [(e, why) for e in entries if latency_of(e, budget) <= limit_ms(budget) and not below_floor(e, budget)
              and (why := partly_placed(e, budget))]
    if placed:
        lines.append(f"{len(placed)} file(s) meet the latency but not budget.require_full_placement: "
                     + "; ".join(f"{e['name']}: {why}" for e, why in placed[:3])
                     + ". To fit: use variants whose operators the provider has kernels for (the matrix's "
                       "placement column), or set budget.require_full_placement: false.")
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
    of at most one student per budget. Static-embedding candidates (arch "static") count apart:
    every one that is feasible at some budget is distilled besides those (one trains in about a
    minute), so they neither take a transformer's place nor lose theirs to one."""
    by_size = sorted(candidates, key=lambda c: -probes[c.name]["params"])
    layered = [c for c in by_size if "static" not in c.arch]
    chosen = []
    for budget in budgets:
        feasible = [c for c in layered if probe_fits(probes[c.name], budget)]
        chosen += [c for c in feasible[:max_students if len(budgets) == 1 else 1] if c not in chosen]
    chosen += [c for c in by_size if "static" in c.arch and any(probe_fits(probes[c.name], b) for b in budgets)]
    return chosen


def pick_on(rows: list[dict], budget: Budget, provider: str, int8: bool, predictions: dict | None = None,
            tasks=None) -> tuple[dict | None, str | None, dict | None]:
    """(the pick among `provider`'s rows, None, the decision) or (None, why nothing fits, None)."""
    mine = [r for r in rows if r["provider"] == provider]
    best, decision = choose(mine, budget, predictions, tasks)
    return best, None if best or not mine else closest_miss(mine, budget, "file", int8, provider), decision


def decide(rows: list[dict], budget: Budget, providers: list[str], int8: bool, predictions: dict | None = None,
           tasks=None) -> tuple[list[dict], dict, dict, dict]:
    """Per provider, the Pareto frontier and the pick: (the rows with meets_budget and pareto set,
    {provider: picked row name or None}, {provider: why nothing fits}, {provider: the decision (choose's), or
    None when nothing fits}). `predictions`, `tasks`: as choose takes them."""
    fronts = {p: pareto_front([r for r in rows if r["provider"] == p], budget) for p in providers}
    rows = [row | {"meets_budget": meets_budget(row, budget), "pareto": row["name"] in fronts[row["provider"]]}
            for row in rows]
    picks, why, decisions = {}, {}, {}
    for provider in providers:
        best, text, decisions[provider] = pick_on(rows, budget, provider, int8, predictions, tasks)
        picks[provider] = best["name"] if best else None
        if text:
            why[provider] = text
    return rows, picks, why, decisions


def sweep_point(rows: list[dict], budget: Budget, provider: str, int8: bool, predictions: dict | None = None,
                tasks=None) -> dict:
    """The pick at one budget of a sweep, among the files measured once for all of them (`predictions`, `tasks`:
    as choose takes them)."""
    best, why, decision = pick_on(rows, budget, provider, int8, predictions, tasks)
    return {"budget": budget.label(), "ms": budget.ms, "speedup": budget.speedup, "limit_ms": limit_ms(budget),
            "provider": provider,
            "pick": best["name"] if best else None,
            "latency_ms": latency_of(best, budget) if best else None,
            "size_bytes": best["size_bytes"] if best else None,
            "metrics": {t: m["value"] for t, m in best["metrics"].items()} if best else None,
            "retention": best["retention"] if best else None,
            "min_retention": min((v for v in best["retention"].values() if v is not None), default=None)
            if best else None,
            "why": why, "decision": decision}


def nothing_feasible(probes: dict, budget: Budget, int8: bool) -> str:
    """Why no candidate is worth training: the closest miss among every probed variant, and what would fit."""
    entries = [{"name": f"{name} ({variant})", "architecture": p["architecture"], **record}
               for name, p in probes.items() for variant, record in p["variants"].items()]
    return closest_miss(entries, budget, "candidate", int8) + " Nothing was trained or written."


def provider_agreement(rows: list[dict], providers: list[str], predictions: dict | None = None,
                       tasks=None) -> list[dict]:
    """Every file measured on the target provider and on another: per task, its metric there minus on the
    target with the paired 95% interval over the same test examples, and whether that is within noise (the
    interval holds zero); its latency there over the target's. The same file can score differently on
    another provider (other kernels, other int8 arithmetic): this is where the report says by how much."""
    if len(providers) < 2:
        return []
    target = providers[0]
    on_target = {r["name"]: r for r in rows if r["provider"] == target}
    golds: dict = {}
    found = []
    for row in rows:
        base = on_target.get(row["name"])
        if row["provider"] == target or base is None:
            continue
        mine, theirs = _outcomes(base, predictions, tasks), _outcomes(row, predictions, tasks)
        differences = {}
        for task, metric in row["metrics"].items():
            if mine is not None and theirs is not None:
                spec = next(t for t in tasks if t.name == task)
                d = _difference(spec, theirs[task], mine[task], golds)
            else:
                d = {"metric": metric["metric"], "difference": metric["value"] - base["metrics"][task]["value"],
                     "ci95": None}
            # None: no interval (predictions not recorded, an older cache), so neither a tie nor a difference
            d["within_noise"] = None if d["ci95"] is None else d["ci95"][0] <= 0 <= d["ci95"][1]
            differences[task] = d
        ratio = {key: row[key]["p95"] / base[key]["p95"] for key in ("latency_ms", "latency_e2e_ms")
                 if row.get(key) and base.get(key)}
        found.append({"name": row["name"], "provider": row["provider"], "versus": target, "tasks": differences,
                      "within_noise": None if any(d["within_noise"] is None for d in differences.values())
                      else all(d["within_noise"] for d in differences.values()),
                      "p95_ratio": ratio, "placement": row.get("placement")})
    return found
