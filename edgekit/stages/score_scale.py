"""What a cosine means after distillation: how a file's similarity scores sit against the teacher's, and the
thresholds that keep the teacher's decisions.

A rank metric (Spearman, MRR) does not see the scale of a cosine: a student can keep the teacher's order of the
pairs while moving every cosine up (a distilled student on Lee: mean cosine 0.405 -> 0.677, pairs above 0.5
from 25% to 98%, Spearman about the same). An app that thresholds the teacher's cosine ("alike when >= 0.5")
then calls nearly every pair alike, and no metric says so. Per task whose kind embeds pairs of texts
(TaskKind.cosine_pairs: similarity, retrieval) this module measures

  shift       the cosine's mean, spread, quantiles and share above 0.5, teacher and file, on the test pairs;
  scale       a map from the file's cosine to the teacher's, fitted on pairs that are NOT test pairs (the task's
              training pairs, or else pairs of distillation texts, which never hold a test text): per teacher
              threshold the file threshold with the same share of those pairs above it (matched), the quantile
              knots of a monotone map (np.interp), and a least-squares line teacher ~ slope * file + intercept;
  decisions   at each teacher threshold, how often the file decides a test pair as the teacher does: at the
              same threshold (raw), at the matched one, and through the line.

The teacher's thresholds are 0.5 (the one an app reaches for first) and its fit-pair cosines with 90%, 75%,
50%, 25% and 10% of the pairs above, rounded to 0.05 as an app would write them. Everything here is numpy on
cosines, except `shipped_scale`, which embeds the fit pairs (and the test pairs of kinds whose predictions hold
no per-pair cosine) with the teacher's fp32 file and the shipped file, on its provider at the budget's batch,
cached per file. Every value returned is a plain number, string, list, dict or None (strict JSON).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

ABOVE = 0.5  # the threshold an app reaches for first: reported whatever the scale
SHARES_ABOVE = (0.9, 0.75, 0.5, 0.25, 0.1)  # teacher thresholds: its fit-pair cosine with this share of pairs above
ROUND_TO = 0.05  # a threshold as an app writes it
QUANTILES = (0.1, 0.5, 0.9)
KNOTS = 21  # the monotone map: both sides' fit-pair quantiles at every 5%
MAX_PAIRS = 512  # paired kinds: training pairs fitted on, at most
MAX_SIDE = 128  # cross kinds (every left x every right): rows per side, at most (16,384 pairs)
FIT_TEXTS = 96  # without enough training pairs: distillation texts, two halves crossed (48 x 48 = 2,304 pairs)
MIN_FIT_PAIRS = 50  # fewer pairs place a threshold by chance
SEED = 0
WHAT = ("how the file's cosine on pairs of texts sits against the teacher's, and the file thresholds that keep the "
        "teacher's decisions (matched on pairs that are not test pairs; agreement measured on the test pairs)")


# --- the numbers, on cosines ------------------------------------------------------------------------


def distribution(cosines) -> dict:
    """Mean, spread, quantiles and share of pairs at or above ABOVE of one model's cosines."""
    c = np.asarray(cosines, dtype=np.float64)
    return {"n": len(c), "mean": float(c.mean()), "std": float(c.std()),
            **{f"p{round(q * 100)}": float(np.quantile(c, q)) for q in QUANTILES},
            "above_0.5": float(np.mean(c >= ABOVE))}


def teacher_thresholds(teacher_fit) -> list[float]:
    """ABOVE and the teacher's fit-pair cosines with each SHARES_ABOVE share of the pairs above, rounded to
    ROUND_TO (to 3 decimals where rounding would put every pair on one side); a threshold with every pair or
    none above it is dropped: there is no decision to match."""
    fit = np.asarray(teacher_fit, dtype=np.float64)
    found = [ABOVE] if 0.01 <= np.mean(fit >= ABOVE) <= 0.99 else []
    for share in SHARES_ABOVE:
        exact = float(np.quantile(fit, 1 - share))
        for t in (round(round(exact / ROUND_TO) * ROUND_TO, 2), round(exact, 3)):
            if 0 < np.mean(fit >= t) < 1:
                if t not in found:
                    found.append(t)
                break
    return sorted(found)


def matched_threshold(teacher_fit, file_fit, threshold: float) -> float:
    """The file's cosine with the same share of the fit pairs at or above it as the teacher's `threshold`."""
    below = float(np.mean(np.asarray(teacher_fit) < threshold))
    return float(np.quantile(np.asarray(file_fit, dtype=np.float64), below))


def fit_line(teacher_fit, file_fit) -> dict:
    """Least squares teacher ~ slope * file + intercept, with its r2; slope None when the file's cosine is constant."""
    x, y = np.asarray(file_fit, dtype=np.float64), np.asarray(teacher_fit, dtype=np.float64)
    if np.ptp(x) == 0:
        return {"slope": None, "intercept": float(y.mean()), "r2": None}
    slope, intercept = np.polyfit(x, y, 1)
    residual, total = float(np.sum((y - (slope * x + intercept)) ** 2)), float(np.sum((y - y.mean()) ** 2))
    return {"slope": float(slope), "intercept": float(intercept), "r2": 1 - residual / total if total else None}


def fit_scale(teacher_fit, file_fit) -> dict:
    """The map from the file's cosine to the teacher's, from the same fit pairs embedded by both: the line, the
    quantile knots and, per teacher threshold, the matched file threshold (and the line's)."""
    teacher_fit, file_fit = np.asarray(teacher_fit, dtype=np.float64), np.asarray(file_fit, dtype=np.float64)
    line = fit_line(teacher_fit, file_fit)
    levels = np.linspace(0, 1, KNOTS)
    thresholds = []
    for t in teacher_thresholds(teacher_fit):
        thresholds.append({"teacher": t, "file": matched_threshold(teacher_fit, file_fit, t),
                           "file_linear": (t - line["intercept"]) / line["slope"] if line["slope"] else None,
                           "teacher_above_fit": float(np.mean(teacher_fit >= t))})
    knots = {"file": np.quantile(file_fit, levels).tolist(), "teacher": np.quantile(teacher_fit, levels).tolist()}
    return {"pairs": len(teacher_fit), "linear": line, "knots": knots, "thresholds": thresholds}


def decisions(teacher_test, file_test, teacher: float, matched: float | None, linear: float | None) -> dict:
    """On the test pairs, at the teacher's threshold `teacher`: the share each model calls alike, and how often the
    file decides as the teacher does at the same threshold, at the `matched` one and at the line's (None: none)."""
    teacher_test, file_test = np.asarray(teacher_test, dtype=np.float64), np.asarray(file_test, dtype=np.float64)
    teacher_says = teacher_test >= teacher

    def agree(threshold):
        return None if threshold is None else float(np.mean((file_test >= threshold) == teacher_says))

    return {"teacher_above": float(np.mean(teacher_says)), "file_above": float(np.mean(file_test >= teacher)),
            "file_above_matched": None if matched is None else float(np.mean(file_test >= matched)),
            "agree_raw": agree(teacher), "agree_matched": agree(matched), "agree_linear": agree(linear)}


def task_scale(teacher_test, file_test, fit: tuple | None = None, source: str = "") -> dict:
    """One task's shift on the test pairs and, from `fit` ((the teacher's, the file's) cosines on the same fit
    pairs; `source` says what those pairs are), its scale and the decisions at each teacher threshold. Without
    fit pairs (None or under MIN_FIT_PAIRS; `source` says why) the shift and the raw agreement at ABOVE alone."""
    shift = {"teacher": distribution(teacher_test), "file": distribution(file_test)}
    if fit is None or len(fit[0]) < MIN_FIT_PAIRS:
        entry = {"fitted_on": None, "why_not_fitted": source or "no pairs outside the test split to fit on",
                 "pairs": 0 if fit is None else len(fit[0]), "linear": None, "knots": None,
                 "thresholds": [{"teacher": ABOVE, "file": None, "file_linear": None, "teacher_above_fit": None,
                                 **decisions(teacher_test, file_test, ABOVE, None, None)}]}
    else:
        scale = fit_scale(*fit)
        rising = scale["linear"]["slope"] is not None and scale["linear"]["slope"] > 0  # else no line threshold
        entry = {"fitted_on": source, **scale,
                 "thresholds": [t | decisions(teacher_test, file_test, t["teacher"], t["file"],
                                              t["file_linear"] if rising else None) for t in scale["thresholds"]]}
    return {"shift": shift, **entry, "headline": _headline(entry["thresholds"])}


def _headline(thresholds: list[dict]) -> float | None:
    """The threshold a sentence names: ABOVE where it was matched, else the one with nearest half the pairs above."""
    if not thresholds:
        return None
    if any(t["teacher"] == ABOVE for t in thresholds):
        return ABOVE
    return min(thresholds, key=lambda t: abs((t["teacher_above_fit"] or 0) - 0.5))["teacher"]


def statement(entry: dict, who: str = "the shipped file") -> str:
    """'mean cosine 0.405 (teacher) -> 0.677 (the shipped file); pairs at or above 0.5: 25% -> 98%; at the teacher's
    0.5 the shipped file decides 27% of the test pairs as the teacher does, at its matched 0.830 96%'."""
    teacher, mine = entry["shift"]["teacher"], entry["shift"]["file"]
    text = (f"mean cosine {teacher['mean']:.3f} (teacher) -> {mine['mean']:.3f} ({who}); pairs at or above 0.5: "
            f"{teacher['above_0.5']:.0%} -> {mine['above_0.5']:.0%}")
    chosen = next((t for t in entry["thresholds"] if t["teacher"] == entry.get("headline")), None)
    if chosen is None:
        return text + "; no teacher threshold splits the fit pairs, so none is matched"
    text += (f"; at the teacher's {chosen['teacher']:g} {who} decides {chosen['agree_raw']:.0%} of the test pairs as "
             "the teacher does")
    if chosen.get("agree_matched") is None:
        return text + f" (no threshold matched: {entry.get('why_not_fitted')})"
    return text + f", at its matched {chosen['file']:.3f} {chosen['agree_matched']:.0%}"


def files_shift(teacher_test, by_file: dict, threshold: float | None) -> list[dict]:
    """Per file (name -> its test-pair cosines), its cosine's mean and share above 0.5, and how often it decides
    as the teacher does at the teacher's `threshold` unchanged (None: ABOVE)."""
    threshold = ABOVE if threshold is None else threshold
    teacher_says = np.asarray(teacher_test, dtype=np.float64) >= threshold
    rows = []
    for name, cosines in by_file.items():
        c = np.asarray(cosines, dtype=np.float64)
        rows.append({"file": name, "mean": float(c.mean()), "above_0.5": float(np.mean(c >= ABOVE)),
                     "threshold": threshold, "agree_raw": float(np.mean((c >= threshold) == teacher_says))})
    return rows


# --- which pairs ---------------------------------------------------------------------------------


Pairs = tuple[list[str], list[str], bool]  # (left, right, cross): TaskKind.cosine_pairs


def _examples(columns: dict | None) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def sample_pairs(pairs: Pairs) -> Pairs:
    """At most MAX_PAIRS pairs (paired) or MAX_SIDE rows per side (cross), a seeded sample in data order."""
    left, right, cross = pairs
    keep = MAX_SIDE if cross else MAX_PAIRS
    if len(left) <= keep:
        return pairs
    rows = np.sort(np.random.default_rng(SEED).permutation(len(left))[:keep])
    return [left[i] for i in rows], [right[i] for i in rows], cross


def pair_count(pairs: Pairs) -> int:
    left, right, cross = pairs
    return len(left) * len(right) if cross else len(left)


def fit_pairs(task, texts: list[str]) -> tuple[Pairs | None, str]:
    """The pairs a task's scale is fitted on, and what they are in words: its training pairs when it has
    MIN_FIT_PAIRS of them, else pairs of distillation texts (`texts`: never a test text); (None, why) when neither."""

    kind = task.kind
    train = kind.cosine_pairs(task.train) if _examples(task.train) else None
    if train is not None and pair_count(train) >= MIN_FIT_PAIRS:
        chosen = sample_pairs(train)
        rows = f"every left x right text of {len(chosen[0])} training rows" if chosen[2] else "training pairs"
        return chosen, f"{pair_count(chosen):,} {rows} of task '{task.name}'"
    distinct = list(dict.fromkeys(texts))
    half = min(len(distinct), FIT_TEXTS) // 2
    if half * half < MIN_FIT_PAIRS:
        return None, (f"task '{task.name}' has {'no' if train is None else 'too few'} training pairs and the "
                      f"distillation set too few texts ({len(distinct)})")
    rows = np.sort(np.random.default_rng(SEED).permutation(len(distinct))[:2 * half])
    left, right = [distinct[i] for i in rows[:half]], [distinct[i] for i in rows[half:2 * half]]
    return (left, right, True), (f"{half * half:,} pairs of distillation texts ({half} x {half}, none of them a test "
                                 f"text), as task '{task.name}' has {'no' if train is None else 'too few'} training "
                                 "pairs")


# --- embedding pairs (the pipeline) ----------------------------------------------------------------


def pair_cosines(path: Path, provider: str, pairs: Pairs, scoring, cache) -> np.ndarray:
    """The cosine of each pair's embeddings from the ONNX file at `path` (cross: every left x right, row-major),
    run as scoring runs it (the budget's batch and provider options); cached per file content, texts and CPU."""
    from edgekit import __version__
    from edgekit.runtime.environment import cpu_fingerprint, package_versions
    from edgekit.runtime.graph_io import embed_texts, unit
    from edgekit.runtime.providers import SessionSettings, create_session
    from edgekit.trust.cache import cache_key, digest_texts
    from edgekit.trust.provenance import sha256_file

    left, right, cross = pairs
    size = pair_count(pairs)
    options = scoring.measurement.options_for(provider)
    key = cache_key("cosines", __version__, sha256_file(path), provider, digest_texts(left), digest_texts(right),
                    cross, scoring.max_length, scoring.batch, cpu_fingerprint(), package_versions().get("onnxruntime"),
                    options)

    def problem(arrays: dict) -> str | None:
        c = arrays.get("cosine")
        return None if c is not None and c.shape == (size,) and c.dtype.kind == "f" else \
            f"does not hold {size} cosines"

    cached = cache.load_arrays("cosines", key, problem)
    if cached is not None:
        return cached["cosine"]
    settings = SessionSettings(provider=provider, threads=os.cpu_count() or 1, allow_spinning=False,
                               options=tuple(sorted(options.items())))
    session, _ = create_session(path, settings)
    embedded = unit(embed_texts(session, scoring.tokenizer, left + right, scoring.max_length, scoring.batch))
    a, b = embedded[:len(left)], embedded[len(left):]  # (left, hidden), (right, hidden)
    cosine = (a @ b.T).ravel() if cross else (a * b).sum(axis=1)
    cache.save_arrays("cosines", key, {"cosine": cosine})
    return cosine


def _recorded(kind, predictions: dict, name: str, provider: str, task: str) -> np.ndarray | None:
    """A file's test-pair cosines as scoring recorded them (similarity), or None."""
    record = predictions.get((name, provider), {}).get(task, {})
    values = record.get("predictions", record).get(kind.pair_cosines) if kind.pair_cosines else None
    return None if values is None else np.asarray(values, dtype=np.float64)


def shipped_scale(shipped: dict, rows: list[dict], predictions: dict, inputs, lab) -> dict | None:
    """report.json's `score_scale`: the shipped file's cosine scale against the teacher's fp32 file on the
    shipped file's provider, per task whose kind embeds pairs; None without such a task.

    `rows`: the report's file rows; `predictions`: scoring's results by (row name, provider), whose recorded
    test-pair cosines are used where the kind records them (the very values its metric was computed on);
    `inputs`: the distillation inputs (their texts: fit pairs for tasks without training pairs); `lab`: the run's
    measure.Lab (its tasks, run folder, scoring and cache)."""
    tasks, run, scoring, cache = lab.tasks, lab.run, lab.scoring, lab.cache

    scaled = [task for task in tasks if task.kind.cosine_pairs(task.test) is not None]
    if not scaled:
        return None
    provider = shipped["provider"]
    teacher = next(r for r in rows if r["name"] == "teacher-fp32" and r["provider"] == provider)
    paths = {"teacher": run / teacher["onnx"], "file": run / shipped["onnx"]}
    names = {"teacher": teacher["name"], "file": shipped["name"]}
    texts = list(getattr(inputs, "texts", None) or [])
    result = {"what": WHAT, "file": shipped["name"], "provider": provider, "teacher": teacher["name"], "tasks": {}}
    for task in scaled:
        kind = task.kind
        test = {who: _recorded(kind, predictions, names[who], provider, task.name) for who in names}
        if any(c is None for c in test.values()):
            pairs = sample_pairs(kind.cosine_pairs(task.test))
            test = {who: pair_cosines(paths[who], provider, pairs, scoring, cache) for who in names}
        fit, fitted_on = fit_pairs(task, texts)
        fitted = tuple(pair_cosines(paths[who], provider, fit, scoring, cache) for who in names) if fit else None
        entry = task_scale(test["teacher"], test["file"], fitted, fitted_on)
        others = {r["name"]: c for r in rows if r["provider"] == provider
                  and (c := _recorded(kind, predictions, r["name"], provider, task.name)) is not None}
        entry = {"kind": kind.name, **entry, "files": files_shift(test["teacher"], others, entry["headline"])}
        entry["statement"] = statement(entry)
        result["tasks"][task.name] = entry
    return result


# --- what a bundle states --------------------------------------------------------------------------


def bundle_record(scale: dict | None, name: str, provider: str) -> dict | None:
    """What manifest.json keeps of report.json's score_scale for the file `name` on `provider`: per task the
    teacher's thresholds with the file's matched ones, the line and the knots; None when the run measured no
    scale for that file (no pair task, or another file than the one shipped)."""
    if not scale or scale.get("file") != name or scale.get("provider") != provider:
        return None
    keep = ("kind", "fitted_on", "why_not_fitted", "pairs", "linear", "knots", "shift", "statement")
    return {"what": scale["what"], "teacher": scale["teacher"],
            "tasks": {task: {**{k: entry.get(k) for k in keep},
                             "thresholds": [{k: t.get(k) for k in ("teacher", "file", "file_linear", "agree_raw",
                                                                   "agree_matched", "agree_linear")}
                                            for t in entry["thresholds"]]}
                      for task, entry in scale["tasks"].items()}}


def metadata_thresholds(record: dict | None) -> str | None:
    """The model file's own statement of its matched thresholds ({task: {teacher's: file's}}), JSON; None without."""
    import json

    if not record:
        return None
    return json.dumps({task: {f"{t['teacher']:g}": round(t["file"], 4) for t in entry["thresholds"]
                              if t.get("file") is not None}
                       for task, entry in record["tasks"].items()}, sort_keys=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scale_problems(scale) -> list[str]:
    """What a bundle reads of report.json's score_scale that is not as edgekit writes it (null is fine)."""
    if scale is None:
        return []
    if not isinstance(scale, dict) or not isinstance(scale.get("tasks"), dict) or not all(
            isinstance(scale.get(k), str) for k in ("what", "file", "provider", "teacher")):
        return ["score_scale is neither null nor an object {what, file, provider, teacher, tasks}"]
    problems = []
    for task, entry in scale["tasks"].items():
        where = f"score_scale.tasks.{task}"
        thresholds = entry.get("thresholds") if isinstance(entry, dict) else None
        if not isinstance(thresholds, list) or not all(
                isinstance(t, dict) and _is_number(t.get("teacher")) and _is_number(t.get("agree_raw"))
                and all(t.get(k) is None or _is_number(t[k]) for k in ("file", "agree_matched")) for t in thresholds):
            problems.append(f"{where}.thresholds is not an array of {{teacher, file}} cosines")
        elif not isinstance(entry.get("shift"), dict) or not isinstance(entry.get("statement"), str):
            problems.append(f"{where} lacks its shift or statement")
    return problems
