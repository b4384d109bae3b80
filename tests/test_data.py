import numpy as np
import pytest

from edgekit.data import builtin, load_images, load_texts
from edgekit.errors import DataError


def test_rotten_tomatoes_has_the_labelled_snippets():
    rows = builtin.rotten_tomatoes()
    assert len(rows) == 12808
    assert {r["label"] for r in rows} == {"fresh", "rotten"}
    assert sum(r["label"] == "fresh" for r in rows) == 7403


def test_lee_documents_decode_their_latin1_pound_sign():
    docs = builtin.lee_documents()
    assert len(docs) == 50 and any("\u00a33,000" in d for d in docs)


def test_digits_are_scaled_images_with_labels():
    images, labels = builtin.digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(labels) == set(range(10))


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(builtin._FILES, "lee", ("edgekit_no_such_package", "x.cor", "pip install something"))
    with pytest.raises(DataError, match="pip install something"):
        builtin.lee_documents()


def test_text_files_and_columns(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n  two  \n")
    (tmp_path / "b.jsonl").write_text('{"sentence": "x y"}\n{"sentence": ""}\n{"sentence": "z"}\n')
    assert load_texts(str(tmp_path / "a.txt")) == ["one", "two"]
    assert load_texts(str(tmp_path / "b.jsonl"), column="sentence") == ["x y", "z"]


def test_bad_text_sources_get_clear_errors(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_texts(str(tmp_path / "latin.txt"))
    with pytest.raises(DataError, match="no non-empty text"):
        load_texts(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="built-in data set"):
        load_texts("imdb")


def test_images_must_be_nchw(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 64), dtype=np.float32))
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        load_images(str(tmp_path / "flat.npy"))
    assert load_images("digits").shape == (1797, 1, 8, 8)
