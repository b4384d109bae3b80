"""Image preprocessing: how the images a user has become the float input every model file takes.

Images arrive as a user saved them: uint8 or float, (N, H, W), (N, H, W, C) or (N, C, H, W).
One transform turns them into the (N, C, H, W) float32 `pixel_values` of the graphs:

    x = (pixels.astype(float32) * scale - mean[c]) / std[c]      (after moving channels first)

`scale` takes the storage type to [0, 1] (uint8 / 255, uint16 / 65535; other numbers as stored);
`mean` and `std` are per channel, from the TRAINING split only (the test split must not shape its
own inputs). Standardized, what a network sees no longer depends on how the pixels were stored
(issue 15: the same digits as uint8 and as [0, 1] floats trained to 0.505 and 0.087; here they
become the same input). How fast edgekit:cnn learns is the recipe's CNN defaults' business.

The transform is fit and applied once, where task data is loaded (edgekit.data.tasks), so teacher
training, distillation, evaluation, calibration and the bundle's reference inputs all see the same
arrays; its record is the run's and the bundle's preprocessing.json, and the bundle's README shows
an app how to apply it. The ONNX graphs take the standardized input: nothing is baked into them, so
every stage measures exactly the file that ships on exactly the arrays this record describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import DataError

FORMAT = "edgekit.preprocessing/1"
INPUT = "pixel_values"  # the graph input of every image model edgekit exports (evaluate.IMAGE_INPUT)
CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: what a channel axis of an image array looks like
LAYOUTS = ("NCHW", "NHWC")
# Storage type -> what takes it to [0, 1]; other numbers (floats, wider integers) are taken as stored.
SCALES = {"uint8": ("1/255", 1 / 255), "uint16": ("1/65535", 1 / 65535)}
_CHUNK = 1024  # images per step of the statistics (float64 sums, never a float64 copy of the data)


def layout_of(shape: tuple, layout: str = "auto") -> tuple[str | None, str | None]:
    """(the layout of an image array of `shape`: NHW, NCHW or NHWC; None) or (None, why it cannot be told,
    naming data.layout). `layout` is data.layout: auto, NCHW or NHWC.

    auto: 3-d arrays are (N, H, W), one channel. A 4-d array is channels-last when its last axis has 1, 3
    or 4 entries and its second has not, channels-first when the second has and the last has not; when
    both or neither have, only data.layout can tell (a (N, 3, 32, 3) array is either)."""
    shape = tuple(shape)
    if len(shape) == 3:
        if layout != "auto":
            return None, (f"the images are a 3-d array {shape}, which is (N, H, W); data.layout {layout} needs "
                          "4-d images: leave data.layout at auto")
        return "NHW", None
    if len(shape) != 4:
        return None, (f"the images have shape {shape}; save them as (N, H, W), (N, H, W, C) or (N, C, H, W) "
                      "with C = 1, 3 or 4")
    if layout != "auto":
        return layout, None
    first, last = shape[1] in CHANNEL_COUNTS, shape[3] in CHANNEL_COUNTS
    if last and not first:
        return "NHWC", None
    if first and not last:
        return "NCHW", None
    which = "both axes 1 and 3 could be" if first else "neither axis 1 nor axis 3 is"
    return None, (f"images of shape {shape}: {which} the channels (1, 3 or 4 of them); set data.layout: NCHW "
                  "for (N, C, H, W) or NHWC for (N, H, W, C)")


def channels_first(images: np.ndarray, layout: str) -> np.ndarray:
    """(N, C, H, W) view of `images` in `layout` (NHW gains one channel)."""
    if layout == "NHW":
        return images[:, None]
    return images.transpose(0, 3, 1, 2) if layout == "NHWC" else images


def _scale(dtype: np.dtype) -> tuple[str, float]:
    return SCALES.get(np.dtype(dtype).name, ("1", 1.0))


def _channel_stats(images: np.ndarray, scale: float) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) `images` * scale, in float64 chunks."""
    channels = images.shape[1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].astype(np.float64) * scale
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    # A constant channel (a blank border band, an unused alpha) has nothing to standardize: divide by 1.
    std = np.where(std > 1e-6, std, 1.0)
    return mean.tolist(), std.tolist()


def fit(train: np.ndarray, layout: str, normalize: bool, source: str) -> dict:
    """The preprocessing record of training images `train` (stored as loaded, in `layout`). With no
    training images (split.eval_only) or `normalize` false there is nothing to standardize with: mean 0, std 1."""
    nchw = channels_first(train, layout)
    scale_text, scale = _scale(train.dtype)
    channels = nchw.shape[1]
    mean, std = ([0.0] * channels, [1.0] * channels)
    if normalize and len(train):
        mean, std = _channel_stats(nchw, scale)
    fitted = "the training split" if normalize and len(train) else None
    return {
        "format": FORMAT,
        "input": INPUT, "layout": "NCHW", "dtype": "float32", "shape": ["batch", *nchw.shape[1:]],
        "source": {"data": source, "dtype": train.dtype.name, "layout": layout, "image_shape": list(train.shape[1:])},
        "scale": scale, "scale_text": scale_text, "normalize": bool(normalize), "mean": mean, "std": std,
        "fit_on": {"split": "train", "images": len(train)} if fitted else None,
        "formula": "pixel_values = (pixels.astype(float32) * scale - mean[c]) / std[c], with pixels stored as "
                   "source says and moved channels first: (N, H, W) -> (N, 1, H, W), (N, H, W, C) -> (N, C, H, W)",
    }


def apply(images: np.ndarray, record: dict) -> np.ndarray:
    """(N, C, H, W) float32 model input of images stored as the record's source describes."""
    x = channels_first(images, record["source"]["layout"]).astype(np.float32)
    x *= np.float32(record["scale"])
    x -= np.asarray(record["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(record["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x)


def check_finite(images: np.ndarray, where: str) -> str | None:
    """Why float images cannot be learnt from (NaN or inf in them), or None."""
    if images.dtype.kind != "f":
        return None
    bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
    if not len(bad):
        return None
    return (f"{where}: {len(bad)} of {len(images)} images hold NaN or inf (the first is image #{bad[0]}); replace "
            "those values (np.nan_to_num) or leave those images out")


def usage_lines(record: dict, input_name: str = INPUT, batch: int = 1) -> list[str]:
    """Python lines (for a bundle's README, after `import json` and `import numpy as np`) that turn images
    stored as the training data were into the graph's input, reading the numbers from preprocessing.json."""
    source = record["source"]
    shape = [batch, *source["image_shape"]]
    move = {"NHW": "[:, None]", "NHWC": ".transpose(0, 3, 1, 2)", "NCHW": ""}[source["layout"]]
    axes = {"NHW": "(N, H, W)", "NHWC": "(N, H, W, C)", "NCHW": "(N, C, H, W)"}[source["layout"]]
    scaled = "floats as stored" if record["scale_text"] == "1" else f"scaled by {record['scale_text']}"
    return ['prep = json.load(open("preprocessing.json"))  # how the training images became the model input',
            (f"pixels = np.zeros({shape}, dtype=np.{source['dtype']})  # your images, stored as the training data "
             f"was (prep[\"source\"]): {axes} {source['dtype']}"),
            f"x = pixels{move}.astype(np.float32) * prep[\"scale\"]  # channels first, {scaled}",
            'mean, std = (np.array(prep[k], dtype=np.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))',
            f'feeds = {{"{input_name}": (x - mean) / std}}  # standardized with the training split\'s statistics']


def prepare_split(train: dict, test: dict, data) -> tuple[dict, dict, dict]:
    """An image task's split columns with the images as model input, and the record: fit on `train`'s
    images, applied to both sides. `data` is the task's DataSpec (layout, normalize, source)."""
    # An eval_only split's training side is an empty array of the same trailing shape: mean 0, std 1.
    stored, other = train["image"], test["image"]
    if len(stored) and len(other) and (stored.shape[1:], stored.dtype) != (other.shape[1:], other.dtype):
        # A test file of the user's own must be stored as the training images are: one transform serves both.
        raise DataError(f"{data.source}: training images are {stored.dtype} {stored.shape[1:]} but test images "
                        f"{other.dtype} {other.shape[1:]}; save both with the same shape, layout and dtype.")
    layout, problem = layout_of(stored.shape, data.layout)
    if problem:
        raise DataError(f"{data.source}: {problem}.")
    digits = " (scikit-learn's load_digits().images / 16, in [0, 1])" if data.source == "digits" else ""
    record = fit(train["image"], layout, data.normalize, data.source + digits)
    return ({**train, "image": apply(train["image"], record)}, {**test, "image": apply(test["image"], record)},
            record)


def describe(record: dict) -> str:
    """One line for the run log: what the images were and what the models take."""
    source, fit_on = record["source"], record["fit_on"]
    stats = ", ".join(f"{m:.3g}/{s:.3g}" for m, s in zip(record["mean"], record["std"]))
    standardized = (f"standardized per channel with the mean/std of {fit_on['images']} training images ({stats})"
                    if fit_on else "not standardized (data.normalize: false, or no training images)")
    shape = ", ".join(map(str, record["shape"][1:]))
    return (f"images {source['dtype']} {source['layout']} {tuple(source['image_shape'])} -> (N, {shape}) float32, "
            f"scaled by {record['scale_text']}, {standardized}; recorded in preprocessing.json")


def write_record(path: Path, record: dict) -> None:
    """The run's preprocessing.json."""
    Path(path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def bundle_record(run_record: Path, graph_input: dict) -> dict:
    """A bundle's preprocessing.json: the run's record (`run_record`, its preprocessing.json) with the bundled
    graph's input (name, dtype, shape: a fixed-shape file has a fixed batch). A run from an edgekit that
    recorded none keeps the description of those days."""
    base = {"input": graph_input["name"], "layout": "NCHW", "dtype": graph_input["dtype"],
            "shape": graph_input["shape"]}
    if not (Path(run_record).exists() or Path(run_record).is_symlink()):
        return {**base, "values": "as the task's data: the digits built-in is pixel / 16 in [0, 1]; .npy/.npz "
                                  "images are fed as stored"}
    from edgekit.errors import BundleError
    from edgekit.trust.reading import read_json

    # the run's record, someone else's file by now: a FIFO, gigabytes or malformed JSON is refused, named
    record = read_json(run_record, dict, what="the run's preprocessing record",
                       fix="rerun `edgekit distill-and-export` into a new folder (the cache makes it quick) rather "
                           "than editing preprocessing.json", error=BundleError)
    return {**base, **{key: value for key, value in record.items() if key not in base}}
