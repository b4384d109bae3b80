"""The report's charts: inline-able SVG text with the labels a reader (and a test) can find."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from edgekit.stages.plot import accuracy_latency_figure, accuracy_latency_svg, sweep_svg

TASKS = [{"name": "sentiment", "metric": "accuracy"}, {"name": "topic", "metric": "accuracy"}]


def row(name, student, variant, p95, values, pareto=False, ci=True):
    metrics = {task: {"metric": "accuracy", "value": v, **({"ci95": [v - 0.02, v + 0.02]} if ci else {})}
               for task, v in values.items()}
    return {"name": name, "student": student, "variant": variant, "size_bytes": 1_000_000, "pareto": pareto,
            "latency_ms": {"p50": p95 * 0.8, "p95": p95, "p99": p95 * 1.2}, "metrics": metrics}


ROWS = [
    row("teacher", "teacher", "fp32", 40.0, {"sentiment": 0.91, "topic": 0.88}, pareto=True),
    row("L6", "L6", "fp32", 12.0, {"sentiment": 0.89, "topic": 0.86}),
    row("L6-int8-dynamic", "L6", "int8-dynamic", 6.0, {"sentiment": 0.88, "topic": 0.85}, pareto=True),
    row("L3-int8-static", "L3", "int8-static", 3.0, {"sentiment": 0.85, "topic": 0.80}, pareto=True),
    row("L3-fp16", "L3", "fp16", 2.5, {"sentiment": 0.84, "topic": 0.79}),
    row("L3-fp32", "L3", "fp32", 5.0, {"sentiment": 0.83, "topic": 0.78}),  # slower and worse than L3-int8-static
]


def parsed(svg: str) -> ET.Element:
    """The chart parses as XML and is a bare <svg> element, ready to inline in HTML."""
    assert svg.startswith("<svg")
    assert "<?xml" not in svg and "DOCTYPE" not in svg
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    return root


def texts(root: ET.Element) -> str:
    """All text in the chart: the labels must stay <text>, not glyph paths, to be searchable."""
    return " ".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


def test_accuracy_latency_names_the_frontier_the_pick_and_the_teacher_only():
    svg = accuracy_latency_svg(ROWS, TASKS, "p95", limit_ms=9.0, picked="L6-int8-dynamic")
    words = texts(parsed(svg))
    labels = [t.get_text() for ax in accuracy_latency_figure(ROWS, TASKS, "p95", 9.0, "L6-int8-dynamic").axes
              for t in ax.texts]
    # per panel: the frontier (no faster file scores higher), the pick and the teacher with their sizes, the budget
    for label in ("L3-fp16", "L3-int8-static", "L6", "pick: L6-int8-dynamic\n1 MB", "teacher\n1 MB", "budget 9 ms"):
        assert labels.count(label) == 2, label
    assert "L3-fp32" not in labels and "L3-fp32" not in words  # off the frontier: a dot only
    assert "sentiment (accuracy), model only" in words and "topic (accuracy), model only" in words
    # Nothing to fetch (the report views offline): no links, images or fonts from elsewhere.
    assert not re.search(r'href="[^#]', svg) and "<image" not in svg and "@import" not in svg and "url(http" not in svg


def test_end_to_end_latency_gets_its_own_panels_and_the_budget_line_follows_the_scope():
    rows = [{**r, "latency_e2e_ms": {q: v + 0.5 for q, v in r["latency_ms"].items()}} for r in ROWS]
    words = texts(parsed(accuracy_latency_svg(rows, TASKS, "p95", 9.0, None, scope="end-to-end")))
    assert "sentiment (accuracy), end to end" in words and "sentiment (accuracy), model only" in words
    assert words.count("budget 9 ms") == 2  # one per task, in the end-to-end panels only
    assert words.index("end to end") < words.index("model only")  # the scope's panels come first


def test_width_scales_with_tasks():
    one = parsed(accuracy_latency_svg(ROWS, TASKS[:1], "p95", 9.0, None))
    two = parsed(accuracy_latency_svg(ROWS, TASKS, "p95", 9.0, None))
    assert float(two.get("width").rstrip("pt")) > float(one.get("width").rstrip("pt"))


def test_same_input_same_bytes():
    args = (ROWS, TASKS, "p95", 9.0, "L6")
    assert accuracy_latency_svg(*args) == accuracy_latency_svg(*args)


@pytest.mark.parametrize("rows, limit, picked", [
    ([ROWS[0]], None, None),  # a single row, no budget, nothing picked
    ([row(f"r{i}", "L3", "fp32", 5.0, {"sentiment": 0.8 + i / 100, "topic": 0.7}) for i in range(3)], 4.0, "r1"),
    ([row(f"r{i}", "L3", "int8", 1.0 + i, {"sentiment": 0.5, "topic": 0.5}, ci=False) for i in range(3)], 2.0, "r0"),
    ([{**ROWS[1], "metrics": {"sentiment": {"metric": "accuracy", "value": 0.9, "ci95": [float("nan")] * 2}}}],
     None, "missing"),  # a NaN interval, a task without a metric, a pick not among the rows
    ([], 3.0, None),
])
def test_accuracy_latency_edge_cases(rows, limit, picked):
    words = texts(parsed(accuracy_latency_svg(rows, TASKS, "p95", limit, picked)))
    assert ("pick" in words) == any(r["name"] == picked for r in rows)
    # the fastest file is on every panel's frontier, so it is always named (as the pick, or by itself)
    if rows:
        assert min(rows, key=lambda r: r["latency_ms"]["p95"])["name"] in words


def test_accuracy_latency_without_tasks():
    parsed(accuracy_latency_svg(ROWS, [], "p50", 9.0, "L6"))


def test_sweep_names_picks_and_misses():
    points = [{"ms": 1.0, "pick": None, "latency_ms": None, "min_retention": None},
              {"ms": 2.0, "pick": "L3-int8-static", "latency_ms": 1.8, "min_retention": 90.9},
              {"ms": 4.0, "pick": "L3-int8-static", "latency_ms": 1.8, "min_retention": 90.9},
              {"ms": 8.0, "pick": "L6-int8-dynamic", "latency_ms": 6.1, "min_retention": 96.6}]
    words = texts(parsed(sweep_svg(points, "p95")))
    assert "nothing fits" in words
    assert "L3-int8-static" in words and "L6-int8-dynamic" in words
    assert "p95" in words


@pytest.mark.parametrize("points", [
    [],
    [{"ms": 3.0, "pick": None, "latency_ms": None, "min_retention": None}],
    [{"ms": 3.0, "pick": "only", "latency_ms": 2.0, "min_retention": 100.0}],
    [{"ms": 3.0, "pick": "a", "latency_ms": 2.0, "min_retention": 95.0},
     {"ms": 6.0, "pick": "b", "latency_ms": None, "min_retention": None}],  # a pick with unknown retention
])
def test_sweep_edge_cases(points):
    words = texts(parsed(sweep_svg(points, "p50")))
    assert all(p["pick"] in words for p in points if p["pick"])
    assert ("nothing fits" in words) == any(not p["pick"] for p in points)


def test_import_stays_light_and_caller_state_untouched():
    # Importing edgekit.stages.plot must not load matplotlib; drawing must neither pick a backend nor
    # leave rcParams changed for a caller who uses pyplot.
    code = ("import sys, edgekit.stages.plot as p; assert 'matplotlib' not in sys.modules; "
            "p.sweep_svg([{'ms': 2.0, 'pick': 'x', 'latency_ms': 1.0, 'min_retention': 99.0}], 'p95'); "
            "p.accuracy_latency_svg([{'name': 'a', 'latency_ms': {'p95': 1.0}, 'metrics': {'t': {'value': 0.5}}}], "
            "[{'name': 't', 'metric': 'accuracy'}], 'p95', 2.0, 'a'); "
            "import matplotlib; assert matplotlib.rcParams['svg.fonttype'] == 'path'; "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
