"""How numbers are written in the log, the reports and the bundle README."""


def milliseconds(value: float) -> str:
    """About 3 significant digits: 15.4, 7.00, 2.36, 0.0123 (a tiny CNN runs in microseconds)."""
    for floor, digits in ((100, 0), (10, 1), (1, 2)):
        if value >= floor:
            return f"{value:.{digits}f}"
    return f"{value:.3g}"


def count(value: float) -> str:
    """Parameters or bytes with a unit prefix: 17.4M, 9.2k."""
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{unit}"
    return f"{value:.0f}"
