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


def timed_shape(batch: int, seq_len: int | str | None, image_shape=None, images: bool = False) -> str:
    """What one timed input is, in words: 'batch 1, seq 128', 'batch 1, the task's own text lengths', or for an
    image model 'batch 1, images 1x8x8 (C x H x W)': an image has no sequence length, so seq_len (whose recipe
    default is 128) says nothing there. `images` without `image_shape`: an image model whose shape is unknown."""
    if image_shape:
        return f"batch {batch}, images {'x'.join(str(int(d)) for d in image_shape)} (C x H x W)"
    if images:
        return f"batch {batch}, the task's images"
    if seq_len == "task":
        return f"batch {batch}, the task's own text lengths"
    return f"batch {batch}, seq {seq_len}"


def class_list(names: list[str], shown: int = 20) -> str:
    """'0 neg, 1 pos': each class name after its index (the logits' column), the first `shown` of a long list."""
    listed = ", ".join(f"{i} {name}" for i, name in enumerate(names[:shown]))
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")
