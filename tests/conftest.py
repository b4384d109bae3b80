import gc
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.runtime.export import ExportConfig, export_model
from edgekit.testing import tiny_text_model


def _malloc_trim():
    """glibc's malloc_trim (returns the heap's free pages to the system), or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()
_FILE = {"path": None}  # the test file the last test came from


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before each test: collect the garbage, freeze what is left (gc.freeze: the collector skips it from then on),
    and give the heap's free pages back to the system.

    The time stage's run_benchmark calls gc.collect() before every session it times (so that freed garbage does not
    count against the session's memory), about 90 times in a tiny run. A full collection walks every object the
    worker holds (its imports: torch, transformers, onnxscript; the session fixtures' runs): 0.5-1 s a call, over
    half of a tiny run's CPU time (2.5x slower runs). Frozen, what was alive before the test is not walked again:
    each collection walks only what the test made. Frozen objects are still freed by reference counting; a garbage
    cycle among them (a module fixture's, torn down at the end of its file) is collected at the first test of the
    next file, where everything is unfrozen and collected once. The trim: memory the collection freed stays in the
    heap unless given back, and a session timed later could reuse it or see it given back, so its memory figure
    (an RSS difference) read 0 or even negative."""
    if item.path != _FILE["path"]:
        _FILE["path"] = item.path
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    if _TRIM is not None:
        _TRIM(0)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_onnx(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny-bert-onnx"
    return export_model(str(tiny_bert), out, ExportConfig(task="feature-extraction")).onnx_path


@pytest.fixture
def model_copy(tiny_bert_onnx, tmp_path):
    """model.onnx alone in a folder: the CLI writes beside it, and it has no tokenizer of its own."""
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_bert_onnx, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture
def run_cli():
    """Invoke the real CLI in-process; returns click's Result (exit_code, output)."""

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def phone_run(tiny_bert, warm_cache):
    """A finished tiny run for the arm64-phone profile: its bundle has model.fixed.onnx, model.ort and the
    mobile usability check (on a copy of the finished tiny run's cache). Tests that change files work on a copy."""
    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    cache = warm_cache("phone")
    return distill_and_export(tiny_recipe(tiny_bert, target="arm64-phone"), out=cache.parent / "run", cache_dir=cache,
                              echo=print)


@pytest.fixture(scope="session")
def finished_run(tiny_bert, tmp_path_factory):
    """A finished tiny text run: ROOT/run (report.json, candidates/, tokenizer/, reference/, bundle/) and its
    ROOT/cache. Tests read it, or change a copy (`bundle`, `run_copy`)."""
    from edgekit.pipeline import distill_and_export
    from edgekit.testing import tiny_recipe

    root = tmp_path_factory.mktemp("finished")
    distill_and_export(tiny_recipe(tiny_bert), out=root / "run", cache_dir=root / "cache", echo=print)
    return root


@pytest.fixture(scope="session")
def warm_cache(finished_run, tmp_path_factory):
    """warm_cache(name): a fresh copy of the finished tiny run's cache in a new folder. A run of another recipe on the
    same tiny teacher and tasks (another budget, a signing key, a target) reuses its teacher outputs, students and
    timings where they apply, and writes nothing into the shared one."""

    def copy(name: str) -> Path:
        return shutil.copytree(finished_run / "cache", tmp_path_factory.mktemp(name) / "cache", symlinks=True)

    return copy


@pytest.fixture
def bundle(finished_run, tmp_path):
    """A copy of the finished run's bundle at tmp_path/bundle; tmp_path itself is 'outside'."""
    return shutil.copytree(finished_run / "run" / "bundle", tmp_path / "bundle", symlinks=True)


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run / "run", tmp_path / "run", symlinks=True)
