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
file F that costs the app less time (fits.app_latency: end to end where measured, since that is what a
request pays; a model-only lead of 0.07 ms means nothing when the tokenizer is 95% of the request), task
by task, by a paired bootstrap of metric(F) - metric(T) on the same resampled test examples
(edgekit.data.metrics.paired_difference, RESAMPLES resamples, seed SEED). F is tied with T when on every task
the lower end of that interval lies within an equivalence margin below zero: budget.tie_margin % of T's
metric. "The interval touches zero" alone is not a tie: on 200 pairs a file 9 points behind had
[-0.128, +0.022], a loss the data cannot rule out. Among T and its ties, those within LATENCY_NOISE of
the fastest count as equally fast (re-timing moves a p95 by ~7% on a shared host); of those the one
keeping the most of the teacher on its worst task ships, then on average, then the smaller. Ties are
judged against T alone, so a chain of small losses cannot add up to a large one. Files whose
per-example predictions were not recorded (an older cache) are not compared: the rank alone places
them, and the decision says so.

End to end, a text file ships one of two ways: tokenizer.json then the file, or its app graph with the tokenizer
inside (measure.time_rows times both alike where the app graph is offered). A file's end-to-end figure is its faster
path at the budget's percentile (fits.faster_path), and so is the teacher's fp32 file's, the reference a speed-up
divides: the best way to ship each file against the best way to ship the teacher (the speed-up a user gets over
what they would run today, had they shipped the teacher as well as it can ship). Each row records its path
(`end_to_end_path`), the decision the top and shipped file's (`top_path`, `ships_path`).

The Pareto frontier is taken over every task's metric (higher is better), the latency
at the budget's percentile and the size (lower is better): a file is on it when no other
file of the same provider is at least as good on all of them and better on one. The
pick is always on the frontier.
"""

from __future__ import annotations

from typing import NamedTuple

from edgekit.data.kinds import image_shape as images_of
from edgekit.recipe import Budget
from edgekit.records import Decision, Row
from edgekit.stages.fits import (
    PATH_WORDS,
    app_latency,
    below_floor,
    below_trivial,
    faster_path,
    latency_of,
    limit_ms,
    meets_budget,
    partly_placed,
    probe_fits,
)
from edgekit.units import timed_shape

RESAMPLES = 1000  # paired bootstrap of each task's difference between two files
SEED = 0  # the same resamples every run: a pick does not change between reruns of the same measurements
LATENCY_NOISE = 0.05  # latencies this close to the fastest of a tie count as equal: the tie goes to retention


def tie_rule(budget: Budget) -> str:
    return (f"a fitting frontier file faster for the app (end to end where measured) is tied with the top-ranked "
            f"one when, on every task, the paired bootstrap 95% interval ({RESAMPLES} resamples of the test "
            "examples, the same for both files) of its metric minus the top file's lies above minus "
            f"{budget.tie_margin:g}% of the top file's metric (budget.tie_margin); among the top file and its ties, "
            f"those within {LATENCY_NOISE:.0%} of the fastest count as equally fast, and of those the one keeping "
            "the most of the teacher on its worst task ships, then on average, then the smaller")


def _kept(entry: dict) -> tuple[float, float]:
    """(worst-task retention, mean retention)."""
    kept = [v for v in entry["retention"].values() if v is not None] or [0.0]
    return min(kept), sum(kept) / len(kept)


def _rank(entry: dict, budget: Budget) -> tuple:
    return (*_kept(entry), -latency_of(entry, budget), -entry["size_bytes"])


def pick(entries: list[dict], budget: Budget, predictions: dict | None = None, tasks=None) -> dict | None:
    """The file to ship among `entries` (one provider's), or None when none meets the budget: choose's file."""
    return choose(entries, budget, predictions, tasks)[0]


def choose(entries: list[Row], budget: Budget, predictions: dict | None = None,
           tasks=None) -> tuple[Row | None, Decision | None]:
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
    faster = sorted((e for e in feasible if app_latency(e, budget) < app_latency(top, budget)),
                    key=lambda e: (app_latency(e, budget), e["size_bytes"]))
    golds: dict = {}
    mine = _outcomes(top, predictions, tasks)
    compared, unpaired = [], []
    for entry in faster:
        theirs = None if mine is None else _outcomes(entry, predictions, tasks)
        if theirs is None:
            unpaired.append(entry["name"])
            continue
        differences = {}
        for task in tasks:
            d = _difference(task, theirs[task.name], mine[task.name], golds)
            d["margin"] = budget.tie_margin / 100 * abs(top["metrics"][task.name]["value"])
            differences[task.name] = d
        compared.append({"name": entry["name"], "latency_ms": app_latency(entry, budget), "path": _path(entry, budget),
                         "size_bytes": entry["size_bytes"], "tasks": differences,
                         # an interval that cannot be computed (every resample undefined) shows no tie
                         "tied": all(d["ci95"] is not None and d["ci95"][0] >= -d["margin"]
                                     for d in differences.values())})
    tied = [next(e for e in faster if e["name"] == c["name"]) for c in compared if c["tied"]]
    pool = [top, *tied]
    fastest = min(app_latency(e, budget) for e in pool)
    near = [e for e in pool if app_latency(e, budget) <= fastest * (1 + LATENCY_NOISE)]
    best = max(near, key=lambda e: (*_kept(e), -e["size_bytes"]))
    decision: Decision = {"top": top["name"], "ships": best["name"], "rule": tie_rule(budget),
                "latency": _paid_words(top, budget), "top_latency_ms": app_latency(top, budget),
                # the end-to-end path each figure is of (fits.faster_path): "tokenizer.json" or "app graph"
                "top_path": _path(top, budget), "ships_path": _path(best, budget),
                "ships_latency_ms": app_latency(best, budget),
                "tie_margin": budget.tie_margin, "compared": compared, "tied": [e["name"] for e in tied],
                "equally_fast": [e["name"] for e in near], "unpaired": unpaired, "by_rank_alone": mine is None,
                # files left out because they are no better than the trivial answer (edgekit.data.baselines)
                "trivial": {e["name"]: below_trivial(e) for e in entries if below_trivial(e)}}
    decision["statement"] = _decision_text(decision, best, budget)
    return best, decision


def _path(entry: dict, budget: Budget) -> str | None:
    """The file's faster end-to-end path at the budget's percentile ("tokenizer.json" or "app graph"), None where
    it has no end-to-end figure (images, web rows)."""
    found = faster_path(entry, budget.percentile)
    return found[0] if found else None


def path_text(entry: dict, budget: Budget) -> str | None:
    """"X's end-to-end figure is its faster path, model.app.onnx, tokenizer inside: p95 0.221 ms (tokenizer.json +
    model.onnx: 0.352 ms)", or None where the file has one end-to-end figure or none."""
    from edgekit.stages.fits import END_TO_END_PATHS

    p = budget.percentile
    figures = {path: entry[key][p] for path, key in END_TO_END_PATHS.items() if entry.get(key)}
    if len(figures) < 2:
        return None
    path = _path(entry, budget)
    other = next(name for name in figures if name != path)
    return (f"{entry['name']}'s end-to-end figure is its faster path, {PATH_WORDS[path]}: {p} {figures[path]:.3g} ms "
            f"({PATH_WORDS[other]}: {figures[other]:.3g} ms)")


def _paid_words(entry: dict, budget: Budget) -> str:
    """What app_latency measured for `entry`: 'ms p95 end to end' or 'ms p95 model only'."""
    return f"ms {budget.percentile} " + ("end to end" if entry.get("latency_e2e_ms") else "model only")


def _outcomes(entry: dict, predictions: dict | None, tasks) -> dict | None:
    """{task: the file's per-example outcome (n,)} from its recorded predictions; None when any is missing."""
    import numpy as np


    results = (predictions or {}).get((entry["name"], entry.get("provider")))
    if results is None or not tasks:
        return None
    found = {}
    for task in tasks:
        kind = task.kind
        values = ((results.get(task.name) or {}).get("predictions") or {}).get(kind.prediction)
        if values is None or len(values) != len(task.test[kind.columns[0]]):
            return None  # recorded before, or on another test split: no pairing is possible
        found[task.name] = kind.outcome(np.asarray(values))
    return found


def _difference(task, theirs, mine, golds: dict) -> dict:
    """{"metric", "difference": metric(theirs) - metric(mine), "ci95": its paired 95% interval}."""
    from edgekit.data.metrics import paired_difference

    if task.name not in golds:
        golds[task.name] = task.kind.gold(task.test)
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
    unit = decision["latency"]
    top = decision["top"]
    margin = f"within the {decision['tie_margin']:g}% margin"
    if decision["by_rank_alone"]:
        text = (f"{top}: picked by rank alone (worst-task retention, then mean retention, latency, size): its "
                "per-example predictions were not recorded (an older cache), so no faster file was checked for "
                "a tie within noise.")
    elif best["name"] != top:
        shipped = next(c for c in decision["compared"] if c["name"] == best["name"])
        text = (f"{best['name']}: tied within noise with {top} ({margin}) on {_differences_text(shipped['tasks'])} "
                f"and faster ({shipped['latency_ms']:.3g} vs {decision['top_latency_ms']:.3g} {unit})")
        rivals = [name for name in decision["equally_fast"] if name != best["name"]]
        text += (f"; as fast within {LATENCY_NOISE:.0%} as {', '.join(rivals)}, it keeps more of the teacher: it "
                 "ships." if rivals else ": the faster file ships.")
        others = [name for name in decision["tied"] if name not in (best["name"], *rivals)]
        if others:
            text += f" Also tied with {top}, but slower or larger: {', '.join(others)}."
    elif decision["compared"]:
        # the task each faster file trails on by the most, beyond the margin
        trails = [f"{c['name']} on {_differences_text({_worst(c): c['tasks'][_worst(c)]})}"
                  for c in decision["compared"] if not c["tied"]]
        equal = [c["name"] for c in decision["compared"] if c["tied"]]
        text = f"{top}: ranked first"
        if trails:
            text += (f", and {'every' if not equal else 'each other'} faster fitting file may lose more than the "
                     f"{decision['tie_margin']:g}% margin on at least one task: " + "; ".join(trails))
        if equal:
            text += (f"; tied with it but within {LATENCY_NOISE:.0%} of its latency, and keeping less of the teacher: "
                     + ", ".join(equal))
        text += "."
    else:
        text = f"{top}: ranked first, and no fitting frontier file is faster."
    if decision["trivial"]:
        text += (" Never considered, no better than the trivial answer: "
                 + "; ".join(f"{name} ({', '.join(why)})" for name, why in decision["trivial"].items()) + ".")
    if decision["unpaired"] and not decision["by_rank_alone"]:
        text += (f" Not compared within noise (their per-example predictions were not recorded): "
                 f"{', '.join(decision['unpaired'])}.")
    if said := path_text(best, budget):
        text += f" {said[0].upper()}{said[1:]}."
    return text


def _worst(compared: dict) -> str:
    """The task on which a compared file's interval lies lowest (its clearest loss)."""
    return min(compared["tasks"], key=lambda t: (compared["tasks"][t]["ci95"] or [float("inf")] * 2)[0]
               + compared["tasks"][t].get("margin", 0.0))


def _objectives(entry: dict, budget: Budget) -> tuple:
    """Every objective as 'higher is better'."""
    return (*(m["value"] for m in entry["metrics"].values()), -latency_of(entry, budget), -entry["size_bytes"])


def pareto_front(entries: list[dict], budget: Budget) -> set[str]:
    """Names of the entries no other entry dominates (compare entries of one provider only)."""
    scored = [(e["name"], _objectives(e, budget)) for e in entries]
    return {name for name, mine in scored
            if not any(all(o >= m for o, m in zip(other, mine)) and other != mine for _, other in scored)}


def shape_text(budget: Budget, image_shape: tuple | None = None, provider: str | None = None,
               images: bool = False) -> str:
    """'batch 1, seq 128, on cpu with 4 thread(s)'; an image model's batch is of images (C x H x W, see
    edgekit.data.kinds.image_shape; `images` without the shape: an image model whose shape is not known here)."""
    shape = timed_shape(budget.batch, budget.seq_len, image_shape, images)
    if budget.scope == "end-to-end":
        shape = f"batch {budget.batch}, text in to outputs out (tokenizer included) on the tasks' test texts"
    return f"{shape}, on {provider or budget.providers[0]} with {budget.threads} thread(s)"


def closest_miss(entries: list[dict], budget: Budget, what: str, int8: bool, provider: str | None = None,
                 image_shape: tuple | None = None) -> str:
    """Why nothing fits, naming the fastest of `entries` and the changes that would fit it
    (`int8`: whether int8 variants were already among them; `image_shape`: an image run's (C, H, W))."""
    fastest = min(entries, key=lambda e: latency_of(e, budget))
    latency = latency_of(fastest, budget)
    ms = f"{budget.percentile} <= {budget.ms:g} ms"
    if budget.speedup is not None:
        ms = (f"{budget.percentile} <= {budget.ms:.3g} ms (x{budget.speedup:g}: the teacher's fp32 file measures "
              f"{budget.teacher_ms:.3g} ms here)")
    if budget.headroom:
        ms += f" with {budget.headroom:.0%} headroom (<= {limit_ms(budget):.3g} ms measured)"
    # Without the shape (a caller that has no tasks), a CNN's architecture still tells an image run; a ViT's or
    # the teacher's files do not.
    image = image_shape is not None or "width" in (fastest.get("architecture") or {})
    lines = [f"no {what} meets {ms} at {shape_text(budget, image_shape, provider, image)}."]
    if latency > limit_ms(budget):
        lines.append(f"The fastest, {fastest['name']}, measures {budget.percentile} {latency:.3g} ms.")
        if budget.speedup is None:
            fixes = [f"raise budget.ms to at least {latency / (1 - budget.headroom):.3g}"]
        else:
            fixes = [f"lower budget.speedup to at most {budget.teacher_ms * (1 - budget.headroom) / latency:.3g}"]
        if isinstance(budget.seq_len, int) and not image and budget.scope == "model":
            # Transformer latency grows about linearly with tokens at these lengths (FIELD-NOTES).
            fixes.append(f"shorten budget.seq_len to about {int(budget.seq_len * limit_ms(budget) / latency)} tokens")
        if any("width" in (e.get("architecture") or {}) for e in entries):  # CNN students (a ViT's are layered)
            fixes.append("add narrower or shallower students (students.widths / students.depths)")
        else:
            fixes.append("add narrower students (students.hidden, e.g. [192]) or fewer layers (students.layers)")
        if not int8:
            fixes.append("allow int8 variants (quantize.variants: [int8-dynamic])")
        fixes.append("or raise budget.threads if the device has the cores")
        lines.append("To fit: " + "; ".join(fixes) + ".")
    fast = [e for e in entries if latency_of(e, budget) <= limit_ms(budget) and "retention" in e]
    trivial = [e for e in fast if below_trivial(e)]
    if trivial:
        shown = "; ".join(f"{e['name']}: " + ", ".join(f"{task} {why}" for task, why in below_trivial(e).items())
                          for e in trivial[:3])
        lines.append(f"{len(trivial)} file(s) meet the latency but are no better than the trivial answer on some task, "
                     f"and such a file never ships: {shown}. "
                     + ("The teacher's own files are among them: it knows no more than that answer (teacher.allow_weak "
                        "ran it anyway); train it or pick one that knows the task."
                        if any(e.get("student") == "teacher" for e in trivial) else
                        "Such a student lost what the teacher knows beyond that answer: train longer "
                        "(distill.epochs), add the task's own texts as unlabeled text (distill.unlabeled), or distill "
                        "a larger student; with a small test set, a larger test split narrows the intervals."))
    fast = [e for e in fast if not below_trivial(e)]
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


def pick_on(rows: list[Row], budget: Budget, provider: str, int8: bool, predictions: dict | None = None,
            tasks=None) -> tuple[Row | None, str | None, Decision | None]:
    """(the pick among `provider`'s rows, None, the decision) or (None, why nothing fits, None)."""
    mine = [r for r in rows if r["provider"] == provider]
    best, decision = choose(mine, budget, predictions, tasks)
    why = None if best or not mine else closest_miss(mine, budget, "file", int8, provider, images_of(tasks))
    return best, why, decision


class Decided(NamedTuple):
    """decide's result, per provider."""

    rows: list[Row]  # every row with meets_budget, pareto (and end_to_end_path) set
    picks: dict[str, str | None]  # provider -> the picked row's name, or None
    why: dict[str, str]  # provider -> why nothing fits (only where nothing does)
    decisions: dict[str, Decision | None]  # provider -> choose's decision, None where nothing fits


def decide(rows: list[Row], budget: Budget, providers: list[str], int8: bool, predictions: dict | None = None,
           tasks=None) -> Decided:
    """Per provider, the Pareto frontier and the pick: (the rows with meets_budget and pareto set,
    {provider: picked row name or None}, {provider: why nothing fits}, {provider: the decision (choose's), or
    None when nothing fits}). `predictions`, `tasks`: as choose takes them."""
    fronts = {p: pareto_front([r for r in rows if r["provider"] == p], budget) for p in providers}
    rows = [row | {"meets_budget": meets_budget(row, budget), "pareto": row["name"] in fronts[row["provider"]]}
            | ({"end_to_end_path": path} if (path := _path(row, budget)) else {}) for row in rows]
    picks, why, decisions = {}, {}, {}
    for provider in providers:
        best, text, decisions[provider] = pick_on(rows, budget, provider, int8, predictions, tasks)
        picks[provider] = best["name"] if best else None
        if text:
            why[provider] = text
    return Decided(rows, picks, why, decisions)


def sweep_point(rows: list[dict], budget: Budget, provider: str, int8: bool, predictions: dict | None = None,
                tasks=None) -> dict:
    """The pick at one budget of a sweep, among the files measured once for all of them (`predictions`, `tasks`:
    as choose takes them)."""
    best, why, decision = pick_on(rows, budget, provider, int8, predictions, tasks)
    return {"budget": budget.label(), "ms": budget.ms, "speedup": budget.speedup, "limit_ms": limit_ms(budget),
            "provider": provider,
            "pick": best["name"] if best else None,
            "latency_ms": latency_of(best, budget) if best else None,
            "path": _path(best, budget) if best and budget.scope == "end-to-end" else None,
            "size_bytes": best["size_bytes"] if best else None,
            "metrics": {t: m["value"] for t, m in best["metrics"].items()} if best else None,
            "retention": best["retention"] if best else None,
            "min_retention": min((v for v in best["retention"].values() if v is not None), default=None)
            if best else None,
            "why": why, "decision": decision}


def nothing_feasible(probes: dict, budget: Budget, int8: bool, shape: tuple | None = None) -> str:
    """Why no candidate is worth training: the closest miss among every probed variant, and what would fit
    (`shape`: an image run's (C, H, W), edgekit.data.kinds.image_shape)."""
    entries = [{"name": f"{name} ({variant})", "architecture": p["architecture"], **record}
               for name, p in probes.items() for variant, record in p["variants"].items()]
    return closest_miss(entries, budget, "candidate", int8, image_shape=shape) + " Nothing was trained or written."


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
