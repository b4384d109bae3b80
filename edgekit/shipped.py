"""The example recipes that ship with edgekit, usable by name from a pip install.

They live in edgekit/recipes/ (package data, so a wheel has them; a checkout's recipes/
is a symlink to that folder). `edgekit recipe check minilm-multitask` and
`edgekit distill-and-export minilm-multitask` find the file through `find_recipe`; a path
that exists always wins over a shipped name, so a recipe of one's own is never shadowed.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import RecipeError

RECIPES_FOLDER = Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """{name: file} of the shipped recipes, sorted by name (the name is the file's stem)."""
    return {path.stem: path for path in sorted(RECIPES_FOLDER.glob("*.yaml"))}


def summary(path: Path) -> str:
    """The first comment line of a recipe file: what it is for, as its author put it."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break  # the comments come first or not at all
    return ""


def find_recipe(name_or_path: str | Path) -> Path:
    """The recipe file to load: `name_or_path` when it exists, else the shipped recipe of that name
    (`minilm-multitask` or `minilm-multitask.yaml`), else a RecipeError listing the shipped names."""
    path = Path(name_or_path)
    if path.exists():
        return path  # a file of one's own (load_recipe reports a folder or unreadable file itself)
    shipped = shipped_recipes()
    # Only a bare name stands for a shipped recipe: `my/dir/minilm-multitask.yaml` that does not exist is a
    # typo in the user's path, and silently running the shipped file instead would hide it.
    if len(path.parts) == 1 and path.suffix in ("", ".yaml") and path.stem in shipped:
        return shipped[path.stem]
    if path.stem in shipped:
        raise RecipeError(f"recipe '{name_or_path}' does not exist. edgekit ships a recipe '{path.stem}': pass just "
                          "its name, or fix the path.")
    names = ", ".join(shipped) or "none (is edgekit/recipes/ missing from the install?)"
    raise RecipeError(f"recipe '{name_or_path}' does not exist. Pass the path of a YAML recipe, or the name of one "
                      f"that ships with edgekit: {names} (`edgekit recipe list`); `edgekit recipe init` writes a "
                      "new one.")
