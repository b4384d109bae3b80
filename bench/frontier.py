"""The bench's frontier chart: every entry's metric against its end-to-end p95, one panel per task, as SVG.

x is what an app waits for per text (tokenizer + model, `compare.E2E` shapes) on a log axis from 0.1 ms (or lower)
to past the slowest teacher file, so a static model2vec row (hundredths of a ms) and the teacher in PyTorch (tens
of ms) share one axis; y is the task's metric with its bootstrap 95% interval. Every entry is a named point.

The drawing reuses the run report's chart helpers (`edgekit.stages.plot`: the SVG canvas without pyplot, plain numbers on
a log axis, and its label placer, which puts each label where it overlaps no other label or marker), so the bench's
chart reads like the report's.
"""

from __future__ import annotations

import math

_X_FLOOR_MS = 0.1
# (colour, marker) per kind of entry: what a user ships without edgekit, model2vec, edgekit's picks.
_STYLE = {"teacher": ("#222222", "o"), "model2vec": ("#1f77b4", "D"), "edgekit": ("#d62728", "s")}


def _group(entry: dict) -> str:
    if entry.get("kind") == "model2vec":
        return "model2vec"
    # edgekit's files carry "budgets" (empty for a frontier file no budget picked, and for the run's best static
    # file): drawn as edgekit's, not as a user's teacher file
    return "edgekit" if "budgets" in entry else "teacher"


def frontier_svg(results: dict) -> str:
    """frontier_figure as an `<svg>` element (also a valid standalone .svg file)."""
    import matplotlib

    from edgekit.stages.plot import _rc, _svg

    with matplotlib.rc_context(_rc("bench-frontier")):
        return _svg(frontier_figure(results))


def frontier_figure(results: dict):
    """One panel per task of `results["e2e_shapes"]`; a matplotlib Figure (no pyplot), its layout fixed."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from edgekit.stages.plot import _log_ticks, _rc, place_labels

    shapes = results.get("e2e_shapes") or {}
    metrics = results.get("metrics") or {}
    tasks = list(shapes) or [None]
    with matplotlib.rc_context(_rc("bench-frontier")):
        fig = Figure(figsize=(0.8 + 5.2 * len(tasks), 4.9), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)  # a renderer to measure the labels with; _svg swaps in the SVG canvas to save
        labels = []
        for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
            labels.append(_panel(ax, task, shapes.get(task), metrics.get(task, "metric"), results["entries"]))
            _log_ticks(ax.xaxis)
        fig.legend(handles=[Line2D([], [], linestyle="none", marker=marker, color=colour, label=label)
                            for label, (colour, marker) in (("teacher, as a user ships it", _STYLE["teacher"]),
                                                            ("model2vec", _STYLE["model2vec"]),
                                                            ("edgekit file", _STYLE["edgekit"]))],
                   loc="outside lower center", ncols=3, frameon=False)
        place_labels(fig, labels)
        return fig


def _panel(ax, task: str | None, shape: str | None, metric: str, entries: list[dict]) -> tuple:
    """Draw one task's points; return what its labels need once the layout is fixed."""
    ax.grid(True, which="major", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency in ms, log scale (end to end: tokenizer + model, batch 1)")
    if task is None:
        ax.text(0.5, 0.5, "no end-to-end timings", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlim(_X_FLOOR_MS / 1.25, 100)
        return ax, [], []
    ax.set_title(f"{task} ({metric})")
    ax.set_ylabel(metric)
    items, obstacles, xs, ys = [], [], [], []
    for entry in entries:
        lat = (entry.get("latency_ms") or {}).get(shape) or {}
        value = (entry.get("metrics") or {}).get(task) or {}
        x, y = lat.get("p95"), value.get("value")
        if x is None or y is None or not (x > 0 and math.isfinite(y)):
            continue
        colour, marker = _STYLE[_group(entry)]
        lo, hi = value.get("ci95") or (y, y)
        # max(0, ...): a bootstrap interval can sit a rounding error off its own point.
        ax.errorbar([x], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt="none", ecolor=colour,
                    elinewidth=0.9, capsize=2.0, alpha=0.45, zorder=2)
        ax.scatter([x], [y], marker=marker, s=46, color=colour, edgecolors="white", linewidths=0.6, zorder=3)
        name = entry["name"].removeprefix("edgekit ")
        text = f"{name} (pick at {', '.join(entry['budgets'])})" if entry.get("budgets") else \
            f"{name} (best static)" if entry.get("best_static") else name
        items.append((text.replace("$", r"\$"), x, y, {"color": colour}))
        obstacles.append((x, y, math.sqrt(46) / 2))
        xs.append(x)
        ys += [y, lo, hi]
    if xs:
        ax.set_xlim(min(_X_FLOOR_MS, min(xs)) / 1.25, max(xs) * 1.8)  # from 0.1 ms to past the slowest file
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
        ax.set_ylim(lo - 0.15 * span, hi + 0.25 * span)  # room above the top point for its label
    # The fastest files first: they sit in the crowded corner and claim their room before the slow teacher files.
    order = sorted(range(len(items)), key=lambda i: items[i][1])
    return ax, [items[i] for i in order], obstacles
