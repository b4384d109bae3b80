"""Charts for the HTML report, as inline SVG text.

The report must open offline (no CDN, no external files), so each chart is returned as an
`<svg>` element to paste into the page. matplotlib is imported inside the functions
(importing edgekit stays cheap), and the figures are built with `matplotlib.figure.Figure`
and the SVG canvas directly, never pyplot: no display is needed, no backend is selected and
no global state changes for a caller who uses pyplot themselves. Settings go through
`rc_context`, which restores the caller's rcParams on the way out.

Labels are placed, not just offset: accuracy_latency_figure lays the figure out, freezes the
layout and gives each label the nearest free spot around its point in display pixels (measured
with an Agg renderer, the same one a test reads the boxes from), so a cluster of files within a
few percent of each other still reads. It returns the Figure; accuracy_latency_svg its SVG.

Text stays text (`svg.fonttype = "none"`): the labels remain searchable and selectable in
the page, and the SVG is a fraction of the size of one with every glyph as a path. Element
ids are salted per chart kind and the metadata (date, version) is left out, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import itertools
import math

from edgekit.names import LATENCY_FIELDS

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


# The latency rows a chart can show: (row key, what it times). Rows carry both for text files; image rows have
# no end-to-end latency (None), and reports from before it was measured have no key at all.
LATENCIES = {scope: (field, {"model": "model only", "end-to-end": "end to end"}[scope])
             for scope, field in LATENCY_FIELDS.items()}
_TIMES = {"model": "the ONNX file alone", "end-to-end": "tokenizer + model"}
_X_FLOOR_MS = 0.1  # static-embedding students run at ~0.05-0.5 ms: the axis always reaches down to here
_LABEL_PAD_PX = 2.0  # clearance around every label and marker when placing labels (browser fonts differ a little)
# Where a label may sit around its point, in order of preference (degrees): right first, as a reader scans.
_ANGLES = (0, 30, -30, 60, -60, 90, -90, 120, -120, 150, -150, 180)
_RADII_PT = (3, 7, 12, 18, 26, 36, 48, 62, 80, 100)  # beyond the marker's edge; past the first two: a leader line


def _area(mb: float, largest: float) -> float:
    """Marker area (pt^2) for a file of `mb` MB: by the square root, so a 10x smaller file still reads as a dot."""
    return 14.0 + 186.0 * math.sqrt(max(mb, 0.0) / largest) if largest > 0 else 40.0


def _size_refs(mbs: list[float]) -> list[float]:
    """Up to three round sizes (MB) spanning the files', for the size legend."""
    lo, hi = min(mbs), max(mbs)
    picks = [lo, math.sqrt(lo * hi) if lo > 0 else hi / 2, hi]
    refs = []
    for mb in picks:
        if mb <= 0:
            continue
        digits = 10 ** math.floor(math.log10(mb))
        value = round(mb / digits) * digits
        if value not in refs:
            refs.append(value)
    return refs


def _mb(row: dict) -> float | None:
    size = _finite(row.get("size_bytes"))
    return None if size is None else size / 1e6


def _mb_text(mb: float) -> str:
    return f"{mb:.3g} MB" if mb < 10 else f"{mb:.0f} MB" if mb >= 100 else f"{mb:.1f} MB"


def _frontier(points: list[tuple]) -> list[tuple]:
    """The (latency, metric) Pareto frontier of one panel, fastest first: each point scores higher than every
    faster one. (report.json's `pareto` is over every task and size together, so it need not climb here.)"""
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p[1], -p[2])):
        if point[2] > best:
            front.append(point)
            best = point[2]
    return front


def accuracy_latency_svg(rows: list[dict], tasks: list[dict], percentile: str, limit_ms: float | None,
                         picked: str | None, *, scope: str = "model", teacher: str | None = None) -> str:
    """accuracy_latency_figure as an inline `<svg>` element."""
    import matplotlib

    with matplotlib.rc_context(_rc("accuracy-latency")):
        return _svg(accuracy_latency_figure(rows, tasks, percentile, limit_ms, picked, scope=scope, teacher=teacher))


def accuracy_latency_figure(rows: list[dict], tasks: list[dict], percentile: str, limit_ms: float | None,
                            picked: str | None, *, scope: str = "model", teacher: str | None = None):
    """One panel per task and latency kind: the task's metric (95% CI as an error bar) against latency at
    `percentile` on a log axis from 0.1 ms (or lower) to past the teacher (latency_axes).

    A row of panels per latency the rows carry: model only (`latency_ms`) and end to end (`latency_e2e_ms`,
    when any row has one); the one the budget bounds (`scope`) comes first and alone carries the budget line
    (`limit_ms`, the budget less its headroom). Marker shape is the variant family, colour the student
    (teacher black), area the file size in MB. The panel's own frontier is a step line; only its files, the
    `picked` row (ringed) and the `teacher` row (default: the teacher's fp32 file) are named, each label placed
    where it overlaps no other label and no marker (with a leader line when it had to move away). Rows without
    a finite latency, or without the task's metric, are left out of that panel rather than failing the report.
    Returns a matplotlib Figure (no pyplot), its layout fixed.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if teacher is None:
        teacher = next((str(r.get("name")) for r in rows if r.get("student") == "teacher"
                        and _family(r.get("variant")) == "fp32"), None)
    colours = _student_colours(rows)
    limit = _budget_limit(limit_ms)
    ranges = latency_axes(rows, percentile, limit_ms, scope)  # the caption states the same ranges
    kinds = list(ranges)
    sizes = [mb for mb in (_mb(r) for r in rows) if mb is not None]
    largest = max(sizes, default=0.0)
    panels = tasks or [{"name": None, "metric": None}]

    with matplotlib.rc_context(_rc("accuracy-latency")):
        fig = Figure(figsize=(0.8 + 4.6 * len(panels), 0.9 + 3.9 * len(kinds)), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)  # a renderer to measure the labels with; _svg swaps in the SVG canvas to save
        grid = fig.subplots(len(kinds), len(panels), squeeze=False)
        labels = []  # (ax, [(text, x, y, style)], obstacles as (x, y, radius_pt)) placed after the layout
        for kind, axes in zip(kinds, grid):
            what = LATENCIES[kind][1]
            placed = [(row, x) for row in rows if (x := _latency(row, kind, percentile)) is not None]
            for ax, task in zip(axes, panels):
                labels.append(_panel(ax, task, kind, what, placed, percentile, colours, largest, picked, teacher,
                                     limit if kind == scope else None, ranges[kind]))
        handles = _legend_handles(rows, colours, sizes, largest, picked, limit is not None, Line2D)
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3 + 3 * len(panels)),
                       frameon=False, handletextpad=0.3, columnspacing=1.2, scatterpoints=1)
        place_labels(fig, labels)
        return fig


def _budget_limit(limit_ms) -> float | None:
    """The budget line's x (ms), or None where there is none to draw (a sweep, a missing or non-positive limit)."""
    limit = _finite(limit_ms)
    return limit if limit is not None and limit > 0 else None


def latency_axes(rows: list[dict], percentile: str, limit_ms: float | None,
                 scope: str = "model") -> dict[str, tuple[float, float]]:
    """{latency kind: (low, high) ms of its row of panels' log x axis}, in the figure's row order: the kind the
    budget bounds (`scope`), then each other kind some row was timed at. From 0.1 ms, lower when a file is
    faster, to past the slowest file (the teacher) and the budget line: static students, transformer students
    and the teacher all on one axis. accuracy_latency_figure sets these limits and the report's caption states
    them (latency_axes_text), so the caption cannot say another range than the chart shows."""
    limit = _budget_limit(limit_ms)
    axes = {}
    for kind in [scope] + [k for k in LATENCIES if k != scope]:
        xs = [x for row in rows if (x := _latency(row, kind, percentile)) is not None]
        if kind != scope and not xs:
            continue  # no file was timed this way: no row of panels
        xs += [limit] if limit is not None and kind == scope else []
        axes[kind] = (min(_X_FLOOR_MS, min(xs)) / 1.25, max(xs) * 1.6) if xs else (_X_FLOOR_MS / 1.25, 100.0)
    return axes


def latency_axes_text(rows: list[dict], percentile: str, limit_ms: float | None, scope: str = "model") -> str:
    """'0.08 to 48 ms (model only), 0.4 to 96 ms (end to end)': latency_axes in words, for a caption."""
    from edgekit.units import milliseconds  # never an exponent: 1440, not 1.44e+03

    return ", ".join(f"{milliseconds(low)} to {milliseconds(high)} ms ({LATENCIES[kind][1]})"
                     for kind, (low, high) in latency_axes(rows, percentile, limit_ms, scope).items())


def place_labels(fig, labels: list[tuple]) -> None:
    """Place each panel's labels (`labels`: (axes, items, obstacles) per panel) without overlap. Labels go where
    the final layout puts the axes: lay out once, freeze it, then place them in pixels."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    for ax, items, obstacles in labels:
        _place_labels(ax, items, obstacles, renderer)


def _latency(row: dict, kind: str, percentile: str) -> float | None:
    x = _finite((row.get(LATENCIES[kind][0]) or {}).get(percentile))
    if kind == "end-to-end":  # the file's faster path, as the selection judges it (fits.faster_path)
        app = _finite((row.get("latency_app_ms") or {}).get(percentile))
        x = app if x is None or (app is not None and app < x) else x
    return x if x is not None and x > 0 else None  # a log axis places positive values only


def _panel(ax, task: dict, kind: str, what: str, placed: list, percentile: str, colours: dict, largest: float,
           picked: str | None, teacher: str | None, limit: float | None, xlim: tuple[float, float]) -> tuple:
    """Draw one task x latency-kind panel on the x range `xlim` (latency_axes); return what its labels need once
    the layout is fixed."""
    name, metric = task.get("name"), task.get("metric") or "metric"
    ax.grid(True, which="major", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(f"{percentile} latency in ms, log scale ({_TIMES[kind]})")
    ax.set_title(_text(f"{name} ({metric}), {what}") if name is not None else f"no tasks, {what}")
    if name is not None:
        ax.set_ylabel(_text(metric))
    points, ys = [], []  # points: (row, x, y, area)
    for row, x in placed:
        m = (row.get("metrics") or {}).get(name) if name is not None else None
        y = _finite((m or {}).get("value"))
        if y is None:
            continue
        mb = _mb(row)
        area = _area(mb if mb is not None else 0.0, largest)
        points.append((row, x, y, area))
        ys.append(y)
        ci = (m or {}).get("ci95") or ()
        lo, hi = (_finite(ci[0]), _finite(ci[1])) if len(ci) == 2 else (None, None)
        colour = colours[str(row.get("student") or "?")]
        if lo is not None and hi is not None:
            # max(0, ...): a bootstrap interval can sit a rounding error off its own point.
            ax.errorbar([x], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt="none", ecolor=colour,
                        elinewidth=0.9, capsize=2.0, alpha=0.45, zorder=2)
            ys += [lo, hi]
        ax.scatter([x], [y], marker=_MARKERS[_family(row.get("variant"))], s=area, color=colour, alpha=0.85,
                   edgecolors="white", linewidths=0.6, zorder=3)
    if not points:
        ax.text(0.5, 0.5, "no measurements", transform=ax.transAxes, ha="center", va="center", color="#777777")
    front = _frontier(points)
    if len(front) > 1:
        ax.step([p[1] for p in front], [p[2] for p in front], where="post", color=_PARETO, linewidth=1.0, zorder=1)
    obstacles = [(x, y, math.sqrt(area) / 2) for _, x, y, area in points]
    first, items = [], []  # labels in the order they claim room: the pick, the teacher, then the frontier
    for row, x, y, area in points:
        mb = _mb(row)
        # Two short lines rather than one long one: a narrow label finds room in a crowded panel.
        size = f"\n{_mb_text(mb)}" if mb is not None else ""
        if picked is not None and row.get("name") == picked:
            ax.scatter([x], [y], s=area + 170, facecolors="none", edgecolors=_PICK, linewidths=1.6, zorder=4)
            obstacles.append((x, y, math.sqrt(area + 170) / 2))
            first.insert(0, (_text(f"pick: {picked}{size}"), x, y, {"color": _PICK, "fontweight": "bold",
                                                                    "linespacing": 1.1}))
        elif teacher is not None and row.get("name") == teacher:
            first.append((_text(f"{teacher}{size}"), x, y, {"color": "#111111", "linespacing": 1.1}))
    items = first + [(_text(row.get("name", "?")), x, y, {"color": "#333333"}) for row, x, y, _ in front
                     if row.get("name") not in (picked, teacher)]
    if limit is not None:
        ax.axvline(limit, color="#555555", linestyle="--", linewidth=1.0, zorder=1)
        budget = ax.text(limit, 0.98, f"budget {_ms(limit)} ms", transform=ax.get_xaxis_transform(), rotation=90,
                         ha="right", va="top", fontsize=_LABEL_SIZE, color="#555555")
        budget.set_in_layout(False)
    ax.set_xscale("log")
    _log_ticks(ax.xaxis)
    ax.set_xlim(*xlim)
    if ys:
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
        ax.set_ylim(lo - 0.12 * span, hi + 0.22 * span)  # room above the top point for its label
    return ax, items, obstacles


def _legend_handles(rows: list[dict], colours: dict, sizes: list[float], largest: float, picked: str | None,
                    budget: bool, Line2D) -> list:
    """Variant families (shape), students (colour), file sizes (area), then the lines."""
    present = [r for r in rows if any(_latency(r, k, p) is not None for k in LATENCIES for p in ("p50", "p95", "p99"))]
    handles = [Line2D([], [], linestyle="none", marker=_MARKERS[f], color="#777777", label=f) for f, _ in _FAMILIES
               if any(_family(r.get("variant")) == f for r in present)]
    handles += [Line2D([], [], linestyle="none", marker="o", color=c, label=_text(s)) for s, c in colours.items()
                if any(str(r.get("student") or "?") == s for r in present)]
    if sizes and present:
        handles += [Line2D([], [], linestyle="none", marker="o", markersize=math.sqrt(_area(mb, largest)),
                           markerfacecolor="none", markeredgecolor="#777777", label=f"{mb:g} MB")
                    for mb in _size_refs(sizes)]
    if present:
        handles.append(Line2D([], [], color=_PARETO, linewidth=1.0, label="frontier"))
    if budget:
        handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1.0, label="budget"))
    if picked is not None and any(r.get("name") == picked for r in present):
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor=_PICK, markeredgewidth=1.6, label="pick"))
    return handles


def _place_labels(ax, items: list[tuple], obstacles: list[tuple], renderer) -> None:
    """Greedy label layout in display pixels: each label, in `items` order, takes the first spot around its point
    (nearest first, right before left) that stays inside the axes, overlaps no placed label, no marker and no
    other text, and is nearer its own point than any other; one moved past the nearest spots, or that could only
    go nearer another point, gets a leader line back to its point. A label that finds no room is left out rather
    than drawn over another (the point is still drawn, and named in the matrix)."""
    from matplotlib.transforms import Bbox

    px_per_pt = ax.figure.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    taken = []
    for x, y, radius_pt in obstacles:
        cx, cy = ax.transData.transform((x, y))
        r = radius_pt * px_per_pt
        taken.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    taken += [t.get_window_extent(renderer) for t in ax.texts]  # the budget's label, 'no measurements'
    lines = _line_boxes(ax)  # the budget line and the frontier: a label across a line reads worse
    own = {(x, y): r for x, y, r in obstacles}
    centres = [(ax.transData.transform((x, y)), r * px_per_pt, (x, y)) for x, y, r in obstacles]
    for text, x, y, style in items:
        cx, cy = ax.transData.transform((x, y))
        probe = ax.text(0, 0, text, fontsize=_LABEL_SIZE, **style)
        box = probe.get_window_extent(renderer)
        probe.remove()
        edge = own.get((x, y), 3.0)
        others = [(c, r) for c, r, xy in centres if xy != (x, y)]
        spot = None
        # First pass: only spots clear of the lines and nearer their own point than any other marker, so the
        # label cannot be read as another file's; then (a crowded cluster) anywhere clear of the lines, and last
        # across a line (the label's white backing keeps it legible); past the first pass, with a leader line.
        for strict, avoid in ((True, lines), (False, lines), (False, [])):
            spot = _free_spot(cx, cy, edge * px_per_pt, box.width, box.height, px_per_pt, frame, taken + avoid,
                              others if strict else None)
            if spot is not None:
                spot = (*spot[:4], spot[4] or not strict)
                break
        if spot is None:
            continue
        ox, oy, ha, va, leader = spot
        taken.append(_box(cx + ox, cy + oy, ha, va, box.width, box.height))
        # A white backing keeps the label legible over the error bars it may cross.
        label = ax.annotate(text, (x, y), xytext=(ox / px_per_pt, oy / px_per_pt), textcoords="offset points",
                            ha=ha, va=va, fontsize=_LABEL_SIZE, zorder=5, annotation_clip=False,
                            bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none",
                                  "alpha": 0.75}, **style)
        label.set_in_layout(False)
        if leader:
            # Moved away from its point: a thin line from the point to the label says whose it is.
            end = ax.transData.inverted().transform((cx + ox, cy + oy))
            ax.plot([x, end[0]], [y, end[1]], color="#9a9a9a", linewidth=0.6, zorder=2.5)


def _line_boxes(ax) -> list:
    """Pixel boxes along every drawn line of `ax` (its segments are horizontal or vertical: steps, the budget)."""
    from matplotlib.transforms import Bbox

    boxes = []
    for line in ax.lines:
        if line.get_linestyle() in ("None", "none", " ", ""):
            continue  # error-bar caps: markers only
        xy = line.get_xydata()
        if line.get_drawstyle() == "steps-post":
            xy = [p for a, b in itertools.pairwise(xy) for p in (a, (b[0], a[1]))] + [xy[-1]]
        pixels = line.get_transform().transform(xy)
        for (x0, y0), (x1, y1) in itertools.pairwise(pixels):
            boxes.append(Bbox.from_extents(min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1))
    return boxes


def _box(x: float, y: float, ha: str, va: str, width: float, height: float):
    """The pixel box of a `width` x `height` label anchored at (x, y) with that alignment, padded."""
    from matplotlib.transforms import Bbox

    x0 = x - (0 if ha == "left" else width if ha == "right" else width / 2)
    y0 = y - (0 if va == "bottom" else height if va == "top" else height / 2)
    pad = _LABEL_PAD_PX
    return Bbox.from_extents(x0 - pad, y0 - pad, x0 + width + pad, y0 + height + pad)


def _free_spot(cx: float, cy: float, edge: float, width: float, height: float, px_per_pt: float, frame, taken: list,
               others: list | None) -> tuple | None:
    """The nearest (dx, dy, ha, va, needs_leader) around the point at pixel (cx, cy) whose box stays in `frame`
    and overlaps nothing `taken`; with `others` (marker centres and radii), also nearer this point than theirs."""
    for step, radius in enumerate(_RADII_PT):
        for angle in _ANGLES:
            dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            ox, oy = dx * (edge + radius * px_per_pt), dy * (edge + radius * px_per_pt)
            va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
            # Beside the point the label extends away from it; above or below it may also hang left or right.
            aligns = ["left"] if dx > 0.3 else ["right"] if dx < -0.3 else ["center", "left", "right"]
            for ha in aligns:
                box = _box(cx + ox, cy + oy, ha, va, width, height)
                if box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1:
                    continue
                if any(box.overlaps(t) for t in taken):
                    continue
                if others is not None:
                    mine = _gap_to(box, (cx, cy)) - edge
                    if any(_gap_to(box, c) - r < mine for c, r in others):
                        continue
                return ox, oy, ha, va, step >= 2
    return None


def _gap_to(box, point) -> float:
    """Pixel distance from a box to a point (0 inside)."""
    px, py = point
    return math.hypot(max(box.x0 - px, 0, px - box.x1), max(box.y0 - py, 0, py - box.y1))


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
