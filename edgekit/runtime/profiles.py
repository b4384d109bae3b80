"""Deployment target profiles: what a device needs, named once in export/NAME.yaml.

The shipped ones live in edgekit/targets/ (package data, so a wheel has them; a checkout's
export/ is a symlink to that folder).

A profile sets the providers and threads a file is measured with, the quantized
variants worth making for that hardware, and the export settings (opset, fixed or
dynamic shapes, .ort, the mobile usability check). A recipe names one with
`target: NAME`; every key the recipe sets itself wins over the profile's.

    description: arm64 phone CPU ...
    budget: {providers: [cpu], threads: 1}
    quantize: {variants: [int8-dynamic, int8-static-minmax]}
    export: {opset: 17, shapes: fixed, ort: true, ort_platform: arm, mobile_check: true}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from edgekit.errors import RecipeError
from edgekit.names import METHODS
from edgekit.recipe import ExportSpec, _Strict, validation_problems

# The profiles that ship with edgekit: package data inside edgekit/, so an installed wheel has them too.
BUILTIN_FOLDER = Path(__file__).resolve().parents[1] / "targets"


class ProfileBudget(_Strict):
    providers: list[str] | None = Field(None, min_length=1, description="ONNX Runtime providers, target first")
    threads: int | None = Field(None, ge=1, description="intra-op threads the file ships with")
    provider_options: dict[str, dict[str, str | int | float | bool]] | None = Field(
        None, description="each provider's own ONNX Runtime options (budget.provider_options)")


class ProfileQuantize(_Strict):
    variants: list[Literal[METHODS]] | None = Field(None, description="the quantization preset for this hardware")


class Profile(_Strict):
    description: str = Field(description="the device and runtime, in a line")
    arch: Literal["x86_64", "arm64", "any"] = Field(
        "any", description="the device's CPU architecture: a run elsewhere says its milliseconds rank the files "
                           "but do not predict the device's")
    budget: ProfileBudget = Field(default_factory=ProfileBudget)
    quantize: ProfileQuantize = Field(default_factory=ProfileQuantize)
    export: ExportSpec = Field(default_factory=ExportSpec)


def elsewhere_note(target: dict | None, machine: dict) -> str | None:
    """A warning when the run measured on another CPU architecture than the profile's device."""
    here = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine["arch"], machine["arch"])
    if not target or target.get("arch", "any") in ("any", here):
        return None
    return (f"The latencies were measured on {machine['name']} ({here}), not on the {target['arch']} device the "
            f"profile {target['name']} targets: they rank the files, they do not predict the device's "
            "milliseconds; re-time the bundle there with `edgekit verify BUNDLE --time`.")


def _folders(near: Path | None) -> list[Path]:
    folders = [near / "export", near.parent / "export"] if near is not None else []
    # A checkout's export/ is a symlink to the built-in folder: name that folder by its real path (and
    # once), so a recipe records the shipped profile it used, wherever it was run from.
    builtin = BUILTIN_FOLDER.resolve()
    named = [BUILTIN_FOLDER if folder.resolve() == builtin else folder
             for folder in [*folders, Path.cwd() / "export", BUILTIN_FOLDER]]
    return list(dict.fromkeys(named))


def available_profiles(near: Path | None = None) -> list[str]:
    return sorted({p.stem for folder in _folders(near) if folder.is_dir() for p in folder.glob("*.yaml")})


def find_profile(target: str, near: Path | None = None) -> Path:
    """The profile file a recipe's `target:` names: a YAML path, or a name looked up in export/
    beside the recipe, in the working folder, then among the profiles that ship with edgekit."""
    if target.endswith((".yaml", ".yml")) or os.sep in target or "/" in target:
        path = Path(target).expanduser()
        path = path if path.is_absolute() or near is None else near / path
        if path.exists():  # a folder, FIFO or device is refused by load_profile, before it is opened
            return path
        raise RecipeError(f"target: profile file '{path}' does not exist; name a profile in export/ "
                          f"({', '.join(available_profiles(near)) or 'none found'}) or fix the path.")
    for folder in _folders(near):
        if (folder / f"{target}.yaml").is_file():
            return folder / f"{target}.yaml"
    raise RecipeError(f"target: there is no profile '{target}'; choose one of "
                      f"{', '.join(available_profiles(near)) or '(none found: is export/ missing?)'}, "
                      "or give the path of a profile YAML.")


def load_profile(target: str, near: Path | None = None) -> tuple[Profile, Path]:
    from edgekit.recipe import load_yaml, read_config_text
    from edgekit.trust.reading import shown

    path = find_profile(target, near)
    # A profile of one's own (target: PATH) is read as defensively as a recipe: only a regular file, of a
    # bounded size, UTF-8, without deep nesting, alias bombs or python-object tags.
    text = read_config_text(path, "profile", "give target: the path of a profile YAML, or the name of one in "
                                             f"export/ ({', '.join(available_profiles(near)) or 'none found'})")
    data = load_yaml(text, shown(path), "profile")
    try:
        return Profile.model_validate(data if isinstance(data, dict) else {}), path
    except ValidationError as e:
        problems = validation_problems(e, str(path), text)
        raise RecipeError(f"profile {path} has {len(problems)} problem(s):\n" + "\n".join(problems)) from None


def apply_profile(data: dict, target: str, near: Path | None, where: str) -> tuple[dict, Path]:
    """(the recipe dict with the profile's settings filled in where the recipe has none of its own,
    the profile's file)."""
    try:
        profile, path = load_profile(target, near)
    except RecipeError as e:
        raise RecipeError(f"{where}: {e}") from None
    except OSError as e:  # a name the file system refuses (too long, unreadable)
        raise RecipeError(f"{where}: target: '{target[:80]}' cannot be read as a profile ({e.strerror}); name a "
                          f"profile in export/ ({', '.join(available_profiles(near))}) or give a readable "
                          "path.") from None
    merged = dict(data)
    for section, defaults in profile.model_dump(exclude_none=True, exclude={"description", "arch"}).items():
        own = merged.get(section)
        if own is None:
            merged[section] = defaults
        elif isinstance(own, dict):
            merged[section] = {**defaults, **own}
        # anything else is the recipe's own mistake, which validation reports at its line
    return merged, path
