"""Recompute a distill-and-export run's claims from its files, without edgekit's evaluation code.

For the picked file (bundle/model.onnx) and the files the gap report compares (teacher-fp32,
the pick's student in fp32, the pick): plain onnxruntime sessions, the bundle's tokenizer,
numpy and scipy score every task on the evaluation split; a plain timing loop (1 thread,
batch 1, seq 128, random ids, as the budget shape) times the pick. Then:
  - the pick's metrics equal the report's (to 0.002: ORT may sum in another order here),
  - its p50/p95 are within 15% of the report's (same machine, different process and time),
  - for a relative budget (speedup: N), the pick timed side by side with the teacher's fp32 file is at
    least N times faster at the budget's percentile, and its retention per task is the report's,
  - the gap report's flip counts, listed flip indices and hardest-slice scores equal the
    recomputation.
Writes bench/results/<date>-<cpu>-check-run.{json,md}; exits 1 on any mismatch.

    python -m bench.check_run runs/minilm-multitask
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr
from transformers import AutoTokenizer

from bench.harness_vs_plain_ort import RESULTS, SEQ_LEN, plain_ort_samples_ms
from edgekit.data.tasks import load_task_data
from edgekit.recipe import Recipe
from edgekit.runtime.environment import cpu_info, cpu_slug

METRIC_TOLERANCE = 0.002
LATENCY_TOLERANCE = 0.15


def _outputs(session, tokenizer, texts: list[str], output: str, max_length: int, batch: int) -> np.ndarray:
    names = {i.name for i in session.get_inputs()}
    pieces = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in encoded.items() if k in names}
        if "token_type_ids" in names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        pieces.append(session.run([output], feed)[0])
    return np.concatenate(pieces)


def score_file(path: Path, tasks, tokenizer, max_length: int, batch: int) -> dict:
    """{task: {"value": metric, "probs"|"cosine": per-example outputs}} with plain onnxruntime, in
    batches of the budget's size (int8-dynamic outputs depend on what else is in a batch)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = {}
    for task in tasks:
        if task.spec.kind == "classification":
            logits = _outputs(session, tokenizer, list(task.test["text"]), f"{task.name}_logits", max_length, batch)
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            gold = np.asarray(task.test["label"])
            results[task.name] = {"value": float((probs.argmax(1) == gold).mean()), "probs": probs}
        elif task.spec.kind == "similarity":
            a = _outputs(session, tokenizer, list(task.test["text_a"]), "embedding", max_length, batch)
            b = _outputs(session, tokenizer, list(task.test["text_b"]), "embedding", max_length, batch)
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            results[task.name] = {"value": float(spearmanr(cosine, task.test["score"]).statistic), "cosine": cosine}
        else:
            raise SystemExit(f"check_run scores classification and similarity tasks; {task.name} is {task.spec.kind}")
    return results


def check_gap(report: dict, scored: dict, tasks) -> list[dict]:
    """The gap report's classification flips and hardest slice against the recomputation."""
    checks = []
    selected = next(r for r in report["files"] if r["name"] == report["selected"]["name"]
                    and r["provider"] == report["selected"]["provider"])
    pairs = {"distillation": ("teacher-fp32", f"{selected['student']}-fp32"),
             "quantization": (f"{selected['student']}-fp32", selected["name"])}
    for task in tasks:
        if task.spec.kind != "classification":
            continue
        gap, gold = report["gap"][task.name], np.asarray(task.test["label"])
        for cause, (before, after) in pairs.items():
            flips = gap["flips"][cause]
            if flips is None:
                continue
            a, b = scored[before][task.name]["probs"].argmax(1), scored[after][task.name]["probs"].argmax(1)
            flipped = set(np.flatnonzero(a != b).tolist())
            listed = {e["index"] for e in flips["examples"]}
            checks.append({"check": f"{task.name}: {cause} flips ({before} -> {after})", "report": flips["count"],
                           "recomputed": len(flipped), "ok": flips["count"] == len(flipped) and listed <= flipped
                           and (len(listed) > 0) == (len(flipped) > 0)})
            lost = int(((a == gold) & (b != gold)).sum())
            checks.append({"check": f"{task.name}: {cause} flips right -> wrong", "report": flips["a_right_b_wrong"],
                           "recomputed": lost, "ok": flips["a_right_b_wrong"] == lost})
        # hardest slice: the lowest teacher margin (top-1 minus top-2 probability), right or wrong
        top = np.sort(scored["teacher-fp32"][task.name]["probs"], axis=1)
        hardest = gap["hardest"]
        order = np.argsort(top[:, -1] - top[:, -2], kind="stable")[:hardest["n"]]
        shipped = scored[selected["name"]][task.name]["probs"].argmax(1)
        recomputed = float((shipped[order] == gold[order]).mean())
        checks.append({"check": f"{task.name}: hardest {hardest['n']} accuracy of the pick",
                       "report": hardest["student"], "recomputed": recomputed,
                       "ok": abs(hardest["student"] - recomputed) <= METRIC_TOLERANCE and len(hardest["examples"]) > 0})
    return checks


def check_speedup(report: dict, selected: dict, run: Path, runs: int, rounds: int = 3) -> list[dict]:
    """A relative budget's claim: the pick is at least `speedup` times faster than the teacher's fp32 file at
    the budget's percentile. Both are timed here with the plain loop, in interleaved rounds (the host's speed
    drifts over minutes), their samples pooled."""
    budget = report["budget"]
    if not budget.get("speedup"):
        return []
    files = {"teacher": run / budget["teacher"]["file"], "pick": run / "bundle" / "model.onnx"}
    samples = {name: [] for name in files}
    for _ in range(rounds):
        for name, path in files.items():
            samples[name] += plain_ort_samples_ms(path, max(runs // rounds, 100))
    q = int(budget["percentile"][1:])
    ratio = float(np.percentile(samples["teacher"], q) / np.percentile(samples["pick"], q))
    return [{"check": f"speed-up over teacher-fp32 at {budget['percentile']}, plain loop (>= x{budget['speedup']:g})",
             "report": budget["teacher"]["ms"] / selected["latency_ms"][budget["percentile"]], "recomputed": ratio,
             "ok": ratio >= budget["speedup"]}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a distill-and-export run folder (with bundle/ and report.json)")
    parser.add_argument("--runs", type=int, default=1000, help="timed runs of the plain loop")
    args = parser.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    recipe = Recipe.model_validate(report["recipe"])
    tasks = [load_task_data(spec) for spec in recipe.tasks]
    tokenizer = AutoTokenizer.from_pretrained(args.run / "bundle")
    max_length = json.loads((args.run / "bundle" / "manifest.json").read_text())["max_length"]
    selected = next(r for r in report["files"] if r["name"] == report["selected"]["name"])

    files = {"teacher-fp32": "teacher/model.onnx", f"{selected['student']}-fp32": None, selected["name"]: None}
    for row in report["files"]:
        if row["name"] in files and row["provider"] == "cpu":
            files[row["name"]] = row["onnx"]
    batch = report["budget"]["batch"]
    scored = {name: score_file(args.run / onnx, tasks, tokenizer, max_length, batch) for name, onnx in files.items()}
    bundle = score_file(args.run / "bundle" / "model.onnx", tasks, tokenizer, max_length, batch)

    checks = [{"check": f"{task}: {selected['metrics'][task]['metric']} of bundle/model.onnx",
               "report": selected["metrics"][task]["value"], "recomputed": result["value"],
               "ok": abs(selected["metrics"][task]["value"] - result["value"]) <= METRIC_TOLERANCE}
              for task, result in bundle.items()]
    samples = plain_ort_samples_ms(args.run / "bundle" / "model.onnx", args.runs)
    for q in ("p50", "p95"):
        value = float(np.percentile(samples, int(q[1:])))
        checks.append({"check": f"{q} latency (ms), plain loop, 1 thread, batch 1, seq {SEQ_LEN}",
                       "report": selected["latency_ms"][q], "recomputed": value,
                       "ok": abs(value / selected["latency_ms"][q] - 1) <= LATENCY_TOLERANCE})
    checks += check_speedup(report, selected, args.run, args.runs)
    for task, result in bundle.items():  # what the pick keeps of the teacher, recomputed on both files
        teacher = scored["teacher-fp32"][task]["value"]
        checks.append({"check": f"{task}: retention of the pick (% of teacher-fp32)",
                       "report": selected["retention"][task], "recomputed": 100 * result["value"] / teacher,
                       "ok": abs(selected["retention"][task] - 100 * result["value"] / teacher) <= 0.3})
    checks += check_gap(report, scored, tasks)

    date = dt.date.today().isoformat()
    result = {"benchmark": "check_run", "date": date, "command": f"python -m bench.check_run {args.run}",
              "run": str(args.run), "selected": selected["name"], "checks": checks, "cpu": cpu_info(),
              "onnxruntime": ort.__version__}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{date}-{cpu_slug()}-check-run"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    def fmt(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = [f"| {c['check']} | {fmt(c['report'])} | {fmt(c['recomputed'])} | {'ok' if c['ok'] else 'MISMATCH'} |"
            for c in checks]
    text = (f"# Independent recomputation of {args.run} ({date})\n\n`{result['command']}` on {cpu_info()['name']}, "
            f"onnxruntime {ort.__version__}; pick {selected['name']}.\n\n| check | report | recomputed | |\n"
            "|---|---|---|---|\n" + "\n".join(rows) + "\n")
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
