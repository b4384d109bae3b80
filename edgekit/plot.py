"""Charts for the HTML report, as inline SVG text.

The report must open offline (no CDN, no external files), so each chart is returned as an
`<svg>` element to paste into the page. matplotlib is imported inside the functions
(importing edgekit stays cheap), and the figures are built with `matplotlib.figure.Figure`
and the SVG canvas directly, never pyplot: no display is needed, no backend is selected and
no global state changes for a caller who uses pyplot themselves. Settings go through
`rc_context`, which restores the caller's rcParams on the way out.

Text stays text (`svg.fonttype = "none"`): the labels remain searchable and selectable in
the page, and the SVG is a fraction of the size of one with every glyph as a path. Element
ids are salted per chart kind and the metadata (date, version) is left out, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math

# Marker per variant family: shape carries the number format, colour carries the model.
_FAMILIES = (("fp32", "o"), ("int8 dynamic", "s"), ("int8 static", "D"), ("fp16", "^"), ("other", "v"))
_MARKERS = dict(_FAMILIES)
_TEACHER = "black"
_PICK = "#d62728"
_PARETO = "#7f7f7f"
_LABEL_SIZE = 7


def _family(variant: str | None) -> str:
    """Variant family from its name: pipeline writes "fp32"/"int8" (dynamic), other tools "int8-static" etc."""
    v = (variant or "").lower()
    if "static" in v:
        return "int8 static"
    if "int8" in v or "dynamic" in v:
        return "int8 dynamic"
    if "fp16" in v or "float16" in v:
        return "fp16"
    if "fp32" in v or "float32" in v or not v:
        return "fp32"
    return "other"


def _finite(value) -> float | None:
    """The value as a float, or None when it is missing or not a finite number (nothing to place)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(value) -> str:
    """Escape `$` so a name never switches matplotlib into mathtext (and fails to parse)."""
    return str(value).replace("$", r"\$")


def _ms(value: float) -> str:
    return f"{value:.3g}"


def _rc(kind: str) -> dict:
    # A fixed salt per chart kind: stable output, and two charts inlined in one page never share
    # an id for different content.
    return {"svg.fonttype": "none", "svg.hashsalt": f"edgekit-{kind}", "font.size": 9,
            "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8}


def _svg(fig) -> str:
    """The figure as an `<svg>` element: no XML prolog or DOCTYPE, which are invalid inside HTML."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    # No RDF metadata block: it is for image editors, and its date and matplotlib version would make
    # the bytes differ between runs and installs.
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):].strip() + "\n"


def _student_colours(rows: list[dict]) -> dict[str, str]:
    """Teacher black, students tab10 in order of first appearance (same colour in every panel)."""
    import matplotlib

    palette = [c for c in matplotlib.colormaps["tab10"].colors]
    colours: dict[str, str] = {}
    for row in rows:
        student = str(row.get("student") or "?")
        if student not in colours:
            colours[student] = _TEACHER if student == "teacher" else \
                matplotlib.colors.to_hex(palette[sum(s != "teacher" for s in colours) % len(palette)])
    return colours


def _log_ticks(axis, base: float = 10) -> None:
    """Plain numbers on a log axis (1, 2, 5, 10 ms), not 10^0 mathtext, which reads worse in a report."""
    from matplotlib import ticker

    subs = (1.0, 2.0, 5.0) if base == 10 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=base, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _x_range(values: list[float], log: bool) -> tuple[float, float]:
    """Limits with room for the name labels right of the points; a zero span (one row, or all rows
    equally fast) still gets a visible range."""
    lo, hi = min(values), max(values)
    if log:
        return lo / 1.3, hi * 1.6
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.2 or 1.0
        return lo - span, hi + span
    return lo - 0.08 * span, hi + 0.2 * span


def accuracy_latency_svg(rows: list[dict], tasks: list[dict], percentile: str, limit_ms: float | None,
                         picked: str | None) -> str:
    """One panel per task: the task's metric (95% CI as an error bar) against latency at `percentile`.

    Marker shape is the variant family, colour the student (teacher black). Pareto rows are joined by
    a step line; the frontier is taken over every task, latency and size together, so within one
    task's panel it need not climb. `limit_ms` (the budget less its headroom) is a dashed line and the
    `picked` row is circled. Rows without a finite latency, or without the task's metric, are left out
    of that panel rather than failing the report.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colours = _student_colours(rows)
    limit = _finite(limit_ms)
    limit = limit if limit is not None and limit > 0 else None
    placed = []  # (row, x) for every row with a usable latency
    for row in rows:
        x = _finite((row.get("latency_ms") or {}).get(percentile))
        if x is not None:
            placed.append((row, x))
    xs_all = [x for _, x in placed] + ([limit] if limit is not None else [])
    # Log only pays when the rows span an order of magnitude; it also needs every value positive.
    log = bool(xs_all) and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 10
    panels = tasks or [{"name": None, "metric": None}]

    with matplotlib.rc_context(_rc("accuracy-latency")):
        fig = Figure(figsize=(1.0 + 4.4 * len(panels), 4.4), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, task in zip(axes, panels):
            name, metric = task.get("name"), task.get("metric") or "metric"
            ax.grid(True, color="#e5e5e5", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_xlabel(f"{percentile} latency (ms)")
            if name is None:
                ax.set_title(f"no tasks vs {percentile} latency")
            else:
                ax.set_title(_text(f"{name} ({metric}) vs {percentile} latency"))
                ax.set_ylabel(_text(metric))
            points = []  # (row, x, y)
            for row, x in placed:
                m = (row.get("metrics") or {}).get(name) if name is not None else None
                y = _finite((m or {}).get("value"))
                if y is not None:
                    points.append((row, x, y))
                    _draw_row(ax, row, m, x, y, colours, picked is not None and row.get("name") == picked)
            if not points:
                ax.text(0.5, 0.5, "no measurements", transform=ax.transAxes, ha="center", va="center",
                        color="#777777")
            front = sorted(((x, y) for row, x, y in points if row.get("pareto")), key=lambda p: p[0])
            if len(front) > 1:
                ax.step([x for x, _ in front], [y for _, y in front], where="post", color=_PARETO,
                        linewidth=1.0, zorder=1)
            for row, x, y in points:
                if picked is not None and row.get("name") == picked:
                    ax.scatter([x], [y], s=300, facecolors="none", edgecolors=_PICK, linewidths=1.6, zorder=4)
                    ax.annotate("pick", (x, y), xytext=(0, -17), textcoords="offset points", ha="center",
                                va="top", color=_PICK, fontsize=8, fontweight="bold")
            if limit is not None:
                ax.axvline(limit, color="#555555", linestyle="--", linewidth=1.0, zorder=1)
                ax.text(limit, 0.98, "budget (with headroom)", transform=ax.get_xaxis_transform(), rotation=90,
                        ha="right", va="top", fontsize=_LABEL_SIZE, color="#555555")
            if log:
                ax.set_xscale("log")
                _log_ticks(ax.xaxis)
            if xs_all:
                ax.set_xlim(*_x_range(xs_all, log))
            ax.margins(y=0.15)

        handles = [Line2D([], [], linestyle="none", marker=_MARKERS[f], color="#777777", label=f) for f, _ in
                   _FAMILIES if any(_family(row.get("variant")) == f for row, _ in placed)]
        handles += [Line2D([], [], linestyle="none", marker="o", color=c, label=_text(s)) for s, c in colours.items()
                    if any(str(row.get("student") or "?") == s for row, _ in placed)]
        if sum(bool(row.get("pareto")) for row, _ in placed) > 1:
            handles.append(Line2D([], [], color=_PARETO, linewidth=1.0, label="Pareto front"))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4 + 2 * len(panels)),
                       frameon=False, handletextpad=0.3, columnspacing=1.0)
        return _svg(fig)


def _draw_row(ax, row: dict, m: dict, x: float, y: float, colours: dict[str, str], is_pick: bool) -> None:
    """One row's point, its 95% CI (when it has a finite one) and its name (moved clear of the pick's circle)."""
    colour = colours[str(row.get("student") or "?")]
    ci = m.get("ci95") or ()
    lo, hi = (_finite(ci[0]), _finite(ci[1])) if len(ci) == 2 else (None, None)
    if lo is not None and hi is not None:
        # max(0, ...): a bootstrap interval can sit a rounding error off its own point.
        ax.errorbar([x], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt="none", ecolor=colour,
                    elinewidth=1.0, capsize=2.5, alpha=0.6, zorder=2)
    ax.scatter([x], [y], marker=_MARKERS[_family(row.get("variant"))], s=36, color=colour, edgecolors="white",
               linewidths=0.5, zorder=3)
    ax.annotate(_text(row.get("name", "?")), (x, y), xytext=(10, 5) if is_pick else (5, 3), textcoords="offset points",
                fontsize=_LABEL_SIZE, color="#333333")


def sweep_svg(points: list[dict], percentile: str) -> str:
    """The pick's worst-task retention (%) per budget (ms, log2 axis), each change of pick named.

    A step line joins the picks: anything that fits a budget also fits every larger one, so between
    two measured budgets the retention is at least the smaller budget's. Budgets where nothing fits
    are an 'x' along the bottom; a pick whose retention is unknown is a hollow circle there.
    """
    import matplotlib
    from matplotlib.figure import Figure

    usable = sorted((p for p in points if (_finite(p.get("ms")) or 0) > 0), key=lambda p: float(p["ms"]))
    kept = [(float(p["ms"]), _finite(p.get("min_retention")), p) for p in usable if p.get("pick")]
    scored = [(x, y, p) for x, y, p in kept if y is not None]
    width = min(12.0, max(6.0, 0.55 * len(usable) + 3))

    with matplotlib.rc_context(_rc("sweep")):
        fig = Figure(figsize=(width, 4.0), layout="constrained")
        ax = fig.subplots()
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title(f"Pick per {percentile} budget")
        ax.set_xlabel(f"budget ({percentile}, ms)")
        ax.set_ylabel("worst-task retention (%)")
        ax.set_xscale("log", base=2)
        bottom = ax.get_xaxis_transform()  # x in data, y as a fraction of the axes: a strip under the data
        if scored:
            ax.step([x for x, _, _ in scored], [y for _, y, _ in scored], where="post", color="#1f77b4",
                    linewidth=1.2, zorder=2)
            ax.scatter([x for x, _, _ in scored], [y for _, y, _ in scored], color="#1f77b4", s=30, zorder=3)
            lo, hi = min(y for _, y, _ in scored), max(y for _, y, _ in scored)
            span = max(hi - lo, 2.0)
            # The lower 20% stays free for the 'nothing fits' strip.
            ax.set_ylim(lo - 0.4 * span, hi + 0.3 * span)
        else:
            ax.set_ylim(0, 105)
        previous = None
        for x, y, p in kept:
            name = str(p["pick"])
            latency = _finite(p.get("latency_ms"))
            label = _text(name) + (f" ({_ms(latency)} ms)" if latency is not None else "")
            if y is None:
                ax.scatter([x], [0.06], transform=bottom, marker="o", facecolors="none", edgecolors="#1f77b4",
                           s=30, zorder=3)
                ax.annotate(label + ", retention unknown", (x, 0.06), xycoords=bottom, xytext=(0, 7),
                            textcoords="offset points", ha="center", fontsize=_LABEL_SIZE, rotation=20)
            elif name != previous:
                # Only where the pick changes: the same name at every budget would be noise.
                ax.annotate(label, (x, y), xytext=(-3, 7), textcoords="offset points", ha="left",
                            fontsize=_LABEL_SIZE, rotation=20, color="#333333")
            previous = name
        misses = [float(p["ms"]) for p in usable if not p.get("pick")]
        if misses:
            ax.scatter(misses, [0.06] * len(misses), transform=bottom, marker="x", color=_PICK, s=36, zorder=3)
            # One label per run of misses (usually the smallest budgets), so labels do not pile up.
            runs = [ms for i, ms in enumerate(misses) if i == 0 or _next(usable, misses[i - 1]) != ms]
            for ms in runs:
                ax.annotate("nothing fits", (ms, 0.06), xycoords=bottom, xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=_LABEL_SIZE, color=_PICK)
        budgets = sorted({float(p["ms"]) for p in usable})
        if budgets:
            _log_ticks(ax.xaxis, base=2)
            if len(budgets) <= 12:
                ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
            ax.set_xlim(budgets[0] / 1.4, budgets[-1] * 1.6)
        else:
            ax.set_xlim(1, 16)
            ax.text(0.5, 0.5, "no budgets", transform=ax.transAxes, ha="center", va="center", color="#777777")
        return _svg(fig)


def _next(points: list[dict], ms: float) -> float | None:
    """The budget after `ms` in the sorted sweep (to tell a run of misses from separate ones)."""
    later = [float(p["ms"]) for p in points if float(p["ms"]) > ms]
    return min(later) if later else None
