"""The report as a person reads it: the first lines say what to ship and what it costs, and the charts' labels
can be read (none overlaps another), on synthetic report.json data shaped like a real run's."""

import copy
import itertools

import pytest

from edgekit.stages.plot import accuracy_latency_figure
from edgekit.stages.report import chart_inputs, render_html, render_markdown

TASKS = [{"name": "sentiment", "kind": "classification", "metric": "accuracy", "skipped_rows": {},
          "trivial": {"value": 0.5, "who": "always answering the most frequent class ('fresh')"}},
         {"name": "lee", "kind": "similarity", "metric": "spearman", "skipped_rows": {}}]  # (an older report: no trivial)
TEACHER = {"sentiment": 0.80, "lee": 0.60}


def file_row(name, student, variant, p95, size_mb, values, e2e=0.4, pareto=False, fits=True):
    """One evaluation-matrix row as report.json has it (e2e: tokenizer ms added end to end; None: no key)."""
    latency = {"p50": p95 * 0.95, "p95": p95, "p99": p95 * 1.1, "mean": p95 * 0.96}
    row = {"name": name, "student": student, "variant": variant, "provider": "cpu", "onnx": f"{name}.onnx",
           "params": 1_000_000, "size_bytes": int(size_mb * 1e6), "architecture": None if student == "teacher" else
           {"layers": 1, "keep": [0], "hidden": 384}, "latency_ms": latency,
           "metrics": {t: {"metric": m["metric"], "value": values[t], "ci95": [values[t] - 0.02, values[t] + 0.02],
                           "n": 500} for t, m in zip(TEACHER, TASKS)},
           "retention": {t: 100 * values[t] / TEACHER[t] for t in TEACHER}, "meets_budget": fits, "pareto": pareto}
    if e2e is not None:
        row["latency_e2e_ms"] = {q: v + e2e for q, v in latency.items()}
    return row


def cluster_data(scope="model", n=20):
    """A run whose `n` student files all lie within 5% of 2 ms, every one better than the faster ones (so all
    are on the frontier and want a label), with the teacher's fp32 file at 30 ms and a 0.06 ms static student."""
    files = [file_row("teacher-fp32", "teacher", "fp32", 30.0, 90.4, TEACHER, e2e=0.5, fits=False)]
    for i in range(n):
        variant = ("fp32", "int8-dynamic", "int8-static-minmax")[i % 3]
        files.append(file_row(f"L{i % 4 + 1}-w{i}-{variant}", f"L{i % 4 + 1}", variant, 2.0 * (1 + 0.05 * i / n),
                              10 + i, {"sentiment": 0.70 + 0.004 * i, "lee": 0.50 + 0.003 * i}, pareto=True))
    files.append(file_row("static256-fp32", "static256", "fp32", 0.06, 4.0, {"sentiment": 0.66, "lee": 0.45},
                          pareto=True))
    pick = files[12]
    worst = {"group": "length", "slice": "tokens 27-35", "n": 665, "metric": "accuracy", "teacher": 0.79,
             "student": 0.77, "change": -0.02, "change_ci95": [-0.035, -0.006]}
    gap = {"sentiment": task_gap("accuracy", worst, []), "lee": task_gap("spearman", None, ["class x (n=3)"])}
    return {
        "recipe": {"name": "cluster"}, "machine": {"name": "test CPU", "instruction_sets": {}}, "seconds": 60.0,
        "budget": {"percentile": "p95", "scope": scope, "ms": 5.0, "speedup": None, "label": "5 ms", "batch": 1,
                   "seq_len": 128, "threads": 1, "size_mb": None, "headroom": 0.1, "limit_ms": 4.5,
                   "min_retention": None, "teacher": {"file": "teacher-fp32.onnx", "provider": "cpu", "ms": 30.0,
                                                      "measured_at": "now", "cached": False}},
        "providers": {"measured": ["cpu"], "skipped": {}}, "variants": {"made": ["fp32"], "skipped": {}},
        "tasks": TASKS, "probes": [], "files": files, "picks": {"cpu": pick["name"]},
        "selected": {"name": pick["name"], "onnx": pick["onnx"], "provider": "cpu", "bundle": "bundle/model.onnx"},
        "why": None, "why_by_provider": {"cpu": None}, "gap": gap, "int8_on_this_cpu": [], "sweep": None,
        "bundle": None}


def task_gap(metric, worst, small):
    """edgekit.stages.gap's record of one task, as report.json holds it (only what the report renders)."""
    return {"metric": metric, "n": 500, "overall": {"teacher": 0.8, "student": 0.75, "change": -0.05},
            "agreement": {"value": 0.9, "what": "same label"}, "statement": "The student is not guaranteed ...",
            "slices": [worst] if worst else [], "intervals": "95%", "calibration": None,
            "hardest": {"rule": "top 10% by teacher loss", "n": 50, "teacher": 0.1, "student": 0.2, "examples": []},
            "flips": {"distillation": None, "quantization": None}, "worst_slice": worst,
            "worst_slice_ignores": {"min_n": 20, "slices": small}}


def label_boxes(fig):
    """Every text drawn inside the panels (file labels, the budget's), as pixel boxes from the renderer."""
    renderer = fig.canvas.get_renderer()
    return [(text.get_text(), text.get_window_extent(renderer)) for ax in fig.axes for text in ax.texts]


@pytest.mark.parametrize("scope", ["model", "end-to-end"])
def test_labels_in_a_tight_cluster_do_not_overlap_and_the_axis_is_log_from_0_1_ms_to_the_teacher(scope):
    # setup
    data = cluster_data(scope)
    # execute
    fig = accuracy_latency_figure(**chart_inputs(data))
    # assert: one row of panels per latency kind, the budget's first; log x from 0.1 ms to past the teacher
    assert len(fig.axes) == 4
    assert [ax.get_title().endswith("end to end") for ax in fig.axes[::2]] == [scope == "end-to-end", scope == "model"]
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert ax.get_xscale() == "log" and low <= 0.1 and high >= 30.0
    boxes = label_boxes(fig)
    names = [text for text, _ in boxes]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    # the pick and the teacher are named in every panel; most of the 20 frontier files too, the rest left out
    # rather than drawn over another label
    assert sum(t.startswith(f"pick: {data['selected']['name']}") for t in names) == 4
    assert sum(t.startswith("teacher-fp32") for t in names) == 4
    assert sum(t.startswith("L") for t in names) >= 4 * 12


def test_labels_do_not_cover_any_point():
    # setup
    data = cluster_data()
    fig = accuracy_latency_figure(**chart_inputs(data))
    renderer = fig.canvas.get_renderer()
    # assert: no label box contains the centre of any marker of its panel
    for ax in fig.axes:
        centres = [ax.transData.transform(offset) for c in ax.collections if hasattr(c, "get_offsets")
                   for offset in c.get_offsets()]
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            assert not any(box.contains(x, y) for x, y in centres), text.get_text()


def test_old_reports_without_end_to_end_latency_get_one_row_of_panels():
    # setup: a report from before latency_e2e_ms and budget.scope
    data = cluster_data()
    del data["budget"]["scope"]
    for row in data["files"]:
        del row["latency_e2e_ms"]
    # execute
    fig = accuracy_latency_figure(**chart_inputs(data))
    markdown = render_markdown(data)
    # assert
    assert len(fig.axes) == 2 and all(ax.get_title().endswith("model only") for ax in fig.axes)
    assert "End to end, tokenizer + model: not measured." in markdown


def first_lines(markdown: str, n: int = 14) -> str:
    return "\n".join(markdown.splitlines()[:n])


def test_first_lines_say_what_to_ship_how_much_faster_what_it_keeps_and_where_it_loses():
    # setup
    data = cluster_data()
    pick = data["files"][12]
    # execute
    head = first_lines(render_markdown(data))
    # assert: every answer before any detail section
    assert f"**Ship {pick['name']}: student L4, int8-static-minmax, on cpu, 21 MB (deploy bundle/model.onnx).**" in head
    assert "- Model only (what the budget bounds): 15x faster than the teacher's fp32 file (p95 2.06 ms vs 30.0 ms)." \
        in head
    assert "- End to end, tokenizer + model: 12x faster than the teacher's fp32 file (p95 2.46 ms vs 30.5 ms)." in head
    assert "- Size: 21 MB against the teacher's fp32 90.4 MB (4.3x smaller)." in head
    assert (f"| sentiment | accuracy | 0.744 [0.724, 0.764] | 0.800 [0.780, 0.820] | {pick['retention']['sentiment']:.1f}% "
            "| 0.500: always answering the most frequent class ('fresh') "
            "| length tokens 27-35 (n=665): accuracy 0.790 -> 0.770, -0.020 [-0.035, -0.006] |") in head
    assert "| lee | spearman |" in head and "% | - | no slice of >= 20 examples scores lower" in head
    assert "## " not in head  # the details start below


def test_nothing_fits_says_why_and_names_the_closest_miss():
    # setup: only the static student meets 0.05 ms... none does: the fastest is the closest miss
    data = cluster_data()
    data["selected"], data["picks"], data["gap"] = None, {"cpu": None}, None
    data["budget"].update(ms=0.05, limit_ms=0.045)
    data["why"] = "no file meets p95 <= 0.05 ms. To fit: raise budget.ms to at least 0.0667."
    # execute
    head = first_lines(render_markdown(data))
    page = render_html(data)
    # assert
    assert "**Nothing fits the budget on cpu: nothing to ship.**" in head
    assert f"- Why: {data['why']}" in head
    assert "- Closest miss: static256-fp32 (fp32, 4 MB), p95 0.06 ms (model only), 33% over the 0.045 ms" in head
    assert "500x faster than the teacher's fp32 file" in head
    assert "| task | metric | closest miss [95% CI] |" in head
    assert page.index("Nothing fits the budget") < page.index("<h2>") and "class='summary miss'" in page


def test_a_tie_within_noise_is_said_on_the_first_screen_and_only_then():
    # setup
    tied, untied = cluster_data(), cluster_data()
    pick = tied["selected"]["name"]
    tied["decision"] = {"cpu": {"top": "L2-w13-int8-dynamic", "ships": pick,
                                "statement": f"{pick}: tied within noise with L2-w13-int8-dynamic: the faster file ships."}}
    untied["decision"] = {"cpu": {"top": pick, "ships": pick, "statement": f"{pick}: ranked first."}}
    # execute
    tied_head, untied_head = first_lines(render_markdown(tied)), first_lines(render_markdown(untied))
    # assert
    assert f"- {pick}: tied within noise with L2-w13-int8-dynamic: the faster file ships." in tied_head
    assert "ranked first" not in untied_head


def test_html_first_screen_holds_the_summary_then_the_chart():
    # setup
    data = cluster_data("end-to-end")
    # execute
    page = render_html(data)
    # assert: summary, then the one chart, then the details; sizes in MB, not bytes
    summary, chart, details = page.index("class='summary ship'"), page.index("<svg"), page.index("<h2>")
    assert summary < chart < details and page.count("<svg") == 1
    assert "size (MB)" in page and "size (bytes)" not in page
    assert "End to end, tokenizer + model (what the budget bounds)" in page


def test_a_chart_without_a_teacher_row_or_sizes_still_draws():
    # setup: rows as a caller outside a run might pass them
    data = cluster_data()
    rows = [copy.deepcopy(r) for r in data["files"] if r["student"] != "teacher"]
    for row in rows[:3]:
        del row["size_bytes"]
    # execute
    fig = accuracy_latency_figure(rows, TASKS, "p95", 4.5, rows[5]["name"])
    # assert
    assert all(ax.get_xlim()[0] <= 0.1 for ax in fig.axes)


def test_when_the_teacher_ships_the_first_lines_say_so_instead_of_a_speed_up_over_itself():
    # setup: nothing smaller ranked above the teacher's own file
    data = cluster_data()
    data["selected"] = {"name": "teacher-fp32", "onnx": "teacher-fp32.onnx", "provider": "cpu",
                        "bundle": "bundle/model.onnx"}
    # execute
    head = first_lines(render_markdown(data))
    # assert
    assert "**Ship teacher-fp32: the teacher itself, fp32, on cpu, 90.4 MB (deploy bundle/model.onnx).**" in head
    assert "This is the teacher's own fp32 file (p95 30.0 ms model only; 30.5 ms end to end" in head
    assert "faster than the teacher" not in head and "| 100.0% |" in head


@pytest.mark.parametrize("scope", ["model", "end-to-end"])
def test_the_chart_caption_states_the_axis_range_the_chart_has(scope):
    # setup: a static student at 0.06 ms, so the axis starts below 0.1 ms
    from edgekit.units import milliseconds

    data = cluster_data(scope)
    # execute
    fig = accuracy_latency_figure(**chart_inputs(data))
    markdown = render_markdown(data)
    # assert: per row of panels (the budget's latency first), the caption's range is the axis' own
    caption = next(line for line in markdown.splitlines() if line.startswith("*Chart: Each task's metric"))
    kinds = {"model": "model only", "end-to-end": "end to end"}
    rows = [fig.axes[0], fig.axes[2]]  # two tasks per row
    stated = [f"{milliseconds(low)} to {milliseconds(high)} ms ({kinds[kind]})"
              for kind, (low, high) in zip([scope, *(k for k in kinds if k != scope)], (ax.get_xlim() for ax in rows))]
    assert ": " + ", ".join(stated) + ". Marker area" in caption
    assert rows[0].get_xlim()[0] < 0.1 and "from 0.1 ms" not in caption


def test_the_report_names_the_end_to_end_path_of_each_figure():
    # setup: an end-to-end budget; the pick (a static student) measured both ways, faster with its app graph; the
    # teacher both ways, faster with tokenizer.json; one file whose app graph was not offered
    data = cluster_data("end-to-end")
    pick = next(r for r in data["files"] if r["name"] == data["selected"]["name"])
    teacher = data["files"][0]
    pick["latency_app_ms"] = {q: v - 0.3 for q, v in pick["latency_e2e_ms"].items()}
    teacher["latency_app_ms"] = {q: v + 1.0 for q, v in teacher["latency_e2e_ms"].items()}
    odd = data["files"][1]
    odd["latency_app_ms"], odd["latency_app_why"] = None, "not offered: the tokenizer is BPE, not WordPiece"
    # execute
    markdown = render_markdown(data)
    head = first_lines(markdown)
    # assert: both paths as columns, labelled by what ships; the ratio names the path; the pick's line its path
    assert "end-to-end p95 (tokenizer.json + model.onnx)" in markdown
    assert "end-to-end p95 (model.app.onnx, tokenizer inside)" in markdown
    assert "faster (app graph) |" in markdown and "faster (tokenizer.json) |" in markdown
    assert (f"model.app.onnx, tokenizer inside not timed for {odd['name']} on cpu: not offered: the tokenizer is "
            "BPE") in markdown
    p95 = pick["latency_app_ms"]["p95"]
    assert f"the pick measures {p95:.3g} ms via model.app.onnx, tokenizer inside" in head
    assert ("this file via model.app.onnx, tokenizer inside (tokenizer.json + model.onnx: "
            f"{pick['latency_e2e_ms']['p95']:.3g} ms), the teacher via tokenizer.json + model.onnx") in head
    assert "and so is the teacher's fp32 file a speed-up is relative to" in head
