"""A bundle used from its README alone, by clients written without edgekit: the README's Python, Node and browser
snippets are run against a bundle, as an app developer would paste them, and must reproduce reference.json (every
output within its tolerance, every label the same); the shipped tokenizer cuts where edgekit measured; nothing in a
bundle names a folder of the machine that built it.

The Node and browser tests (marked `web`) need Node, Chromium and web/node_modules: `make test-web`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.stages.app_clients import NPM

REPO = Path(__file__).resolve().parents[1]
WEB_MODULES = Path(os.environ.get("EDGEKIT_WEB_MODULES", REPO / "web" / "node_modules"))
CHECK_JS = (Path(__file__).parent / "clients" / "check_reference.js").read_text()
CHECK_PY = '''
reference = json.load(open("reference.json"))
report = {"texts": len(reference["texts"]), "max_abs_diff": {}, "labels_changed": {}}
for i, text in enumerate(reference["texts"]):
    got = predict([text])
    for name, rows in reference["outputs"].items():
        diff = float(np.abs(np.asarray(rows[i]) - got[name][0].ravel()).max())
        report["max_abs_diff"][name] = max(report["max_abs_diff"].get(name, 0.0), diff)
    for task, names in reference["labels"].items():
        index = int(got[reference["label_outputs"][task]][0].argmax())
        label = labels[task][index] if task in labels else index
        report["labels_changed"][task] = report["labels_changed"].get(task, 0) + (label != names[i])
print("EDGEKIT-RESULT " + json.dumps(report))
'''


def snippet(readme: str, heading: str) -> str:
    """The first fenced code block under `heading` (e.g. '## Node') of a bundle's README."""
    section = readme.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```\w*\n(.*?)```", section, re.DOTALL).group(1)


def result(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("EDGEKIT-RESULT "))
    return json.loads(line.removeprefix("EDGEKIT-RESULT "))


def assert_reproduces(report: dict, bundle: Path) -> None:
    reference = json.loads((bundle / "reference.json").read_text())
    assert report["texts"] == len(reference["texts"]) > 0
    assert report["labels_changed"] == {task: 0 for task in reference["labels"]}
    tolerance = reference["tolerance"]
    for name, rows in reference["outputs"].items():
        scale = max(abs(x) for row in rows for x in row)
        assert report["max_abs_diff"][name] <= tolerance["atol"] + tolerance["rtol"] * scale, (name, report)


def test_the_python_snippet_reproduces_the_reference(bundle):
    readme = (bundle / "README.md").read_text()
    code = snippet(readme, "## Python")
    assert "transformers" not in code  # tokenizers and onnxruntime only, as the README's install line says
    done = subprocess.run([sys.executable, "-c", code + CHECK_PY], cwd=bundle, check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sentiment:") or "EDGEKIT-RESULT" in done.stdout
    assert_reproduces(result(done.stdout), bundle)


def test_the_shipped_tokenizer_cuts_where_edgekit_measured(bundle):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    manifest = json.loads((bundle / "manifest.json").read_text())
    max_length = manifest["max_length"]
    long_text = " ".join(["a text far longer than the teacher's max_length"] * 60)
    assert len(Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(long_text).ids) == max_length
    assert len(AutoTokenizer.from_pretrained(bundle)(long_text, truncation=True)["input_ids"]) == max_length
    spec = json.loads((bundle / "tokenizer.json").read_text())
    assert spec["truncation"]["max_length"] == max_length
    assert json.loads((bundle / "tokenizer_config.json").read_text())["model_max_length"] == max_length
    checked = manifest["clients"]["tokenization"]
    assert checked["longest"] == max_length and checked["javascript"]


def test_no_file_of_a_bundle_names_a_folder_of_the_machine_that_built_it(finished_run):
    bundle = finished_run / "run" / "bundle"
    machine = {str(finished_run), str(finished_run.resolve()), sys.prefix, str(Path.home()), str(REPO),
               os.environ.get("TMPDIR", "/tmp"), "site-packages"}
    for file in bundle.iterdir():
        data = file.read_bytes()
        found = [folder for folder in machine if folder.encode() in data]
        assert not found, f"{file.name} names {found}"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["teacher"].get("path") is None or not manifest["teacher"]["path"].startswith("/")


def test_the_snippets_are_written_for_the_packages_the_tests_install():
    pinned = json.loads((REPO / "web" / "package.json").read_text())["dependencies"]
    assert {name: pinned[name] for name in NPM if name in pinned} == {k: v for k, v in NPM.items() if k in pinned}
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())["packages"]
    assert {name: lock[f"node_modules/{name}"]["version"] for name in NPM} == NPM


def app_folder(bundle: Path, tmp_path: Path) -> Path:
    """The bundle as an app developer's folder: its files, and node_modules/ (web/node_modules, linked)."""
    if not (WEB_MODULES / "onnxruntime-node").is_dir():
        pytest.fail(f"{WEB_MODULES} lacks the npm packages: run `make setup-web` (or set EDGEKIT_WEB_MODULES)")
    app = shutil.copytree(bundle, tmp_path / "app")
    (app / "node_modules").symlink_to(WEB_MODULES, target_is_directory=True)
    return app


@pytest.mark.web
def test_the_node_snippet_reproduces_the_reference(bundle, tmp_path):
    app = app_folder(bundle, tmp_path)
    (app / "app.mjs").write_text(snippet((bundle / "README.md").read_text(), "## Node") + CHECK_JS)
    done = subprocess.run(["node", "app.mjs"], cwd=app, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_reproduces(result(done.stdout), bundle)


@pytest.mark.web
def test_the_browser_snippet_reproduces_the_reference_in_chromium(bundle, tmp_path):
    app = app_folder(bundle, tmp_path)
    page = snippet((bundle / "README.md").read_text(), "## Browser")
    # the check runs inside the snippet's module script, after its predict()
    (app / "index.html").write_text(page.replace("</script>\n", CHECK_JS + "</script>\n", 1)
                                    if page.count("</script>") == 1 else
                                    page[:page.rindex("</script>")] + CHECK_JS + page[page.rindex("</script>"):])
    done = subprocess.run(["node", str(Path(__file__).parent / "clients" / "run_page.cjs"), str(app)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_reproduces(result(done.stdout), bundle)
