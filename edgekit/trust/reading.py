"""Reading files edgekit is handed, defensively: every parser behind a size and depth limit, every failure an
EdgekitError naming the file, what is wrong and the fix.

Recipes, data files, teacher folders, ONNX files, bundles, manifests and cache entries come from someone else.
A FIFO or a device in their place would make a read block forever or never end; a file of gigabytes where a
config belongs, or JSON nested a million deep, would exhaust memory or the interpreter's stack before a parser
says a word; a header that declares more than the file holds (or the machine has) would allocate it. So:
`regular_file` before any open, `read_json` / `read_text` with a byte limit, `check_depth` on what a parser
returns, `check_allocation` before anything sized from a file's header is made, and `shown` on every name that
reaches the terminal (a file name holding escape sequences would otherwise redraw the user's screen).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from edgekit.errors import EdgekitError, InvalidModelFile

# A JSON or YAML file edgekit reads whole (configs, manifests, reports, recipes, cache entries) is never larger
# than this; data files are streamed and have their own limits.
MAX_JSON_BYTES = 64 << 20
# Nothing edgekit writes or reads nests deeper than a dozen levels; a hundred leaves room for any real config.
MAX_DEPTH = 100


def shown(value) -> str:
    """`value` as text safe to print: control characters (terminal escape sequences, carriage returns, newlines
    inside a name) written as escapes, the way repr() would, so a hostile file name cannot redraw the screen."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, for a message: "a FIFO (named pipe)", "a device", "a folder", ..."""
    return ("a regular file" if stat.S_ISREG(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a symbolic link" if stat.S_ISLNK(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def not_regular(path: str | Path) -> str | None:
    """What `path` is when it exists but is not a regular file ("a FIFO (named pipe)", "a folder", ...; symlinks
    followed), else None: asked without opening it, which for a FIFO would block."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else kind_of(mode)


def regular_file(path: str | Path, what: str = "", fix: str = "", error: type[EdgekitError] = EdgekitError) -> Path:
    """`path` if it is a regular file (after following symlinks), else `error` before anything opens it: a FIFO
    would block the read forever, a device (/dev/zero) would never end."""
    path = Path(path)
    label = f"{what} {shown(path)}".strip()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{label} does not exist{f'; {fix}' if fix else ''}.") from None
    except OSError as e:
        raise error(f"{label} cannot be read ({e.strerror}){f'; {fix}' if fix else ''}.") from None
    if not stat.S_ISREG(mode):
        raise error(f"{label} is {kind_of(mode)}, not a regular file; edgekit reads only regular files"
                    f"{f': {fix}' if fix else ''}.")
    return path


def open_file(path: str | Path, follow_symlinks: bool = True):
    """(`path` open for binary reading, None), or (None, why not: "absent", "is <what it is>" for anything but a
    regular file, "cannot be read|opened (<reason>)"). Checked by name first, then on the open descriptor, opened
    non-blocking (and, unless `follow_symlinks`, not through a symlink), so that a FIFO or link swapped in between
    can neither block the open nor lead elsewhere."""
    try:
        mode = (os.stat if follow_symlinks else os.lstat)(path).st_mode
    except FileNotFoundError:
        return None, "absent"
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(mode):
        return None, f"is {kind_of(mode)}"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:  # replaced since the stat
        return None, "absent"
    except OSError as e:
        return None, f"cannot be opened ({e.strerror})"
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        return None, f"is {kind_of(mode)}"
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), None


def open_regular(path: str | Path, what: str = "", fix: str = "", error: type[EdgekitError] = EdgekitError,
                 follow_symlinks: bool = True):
    """`path` open for binary reading (open_file), or `error` naming it, what it is and `fix`."""
    f, why = open_file(path, follow_symlinks)
    if f is None:
        label = f"{what} {shown(path)}".strip()
        why = ("does not exist" if why == "absent" else
               f"{why}, not a regular file; edgekit reads only regular files" if why.startswith("is ") else why)
        separator = ":" if why.endswith("regular files") else ";"
        raise error(f"{label} {why}{f'{separator} {fix}' if fix else ''}.")
    return f


def read_bytes(path: str | Path, limit: int = MAX_JSON_BYTES, what: str = "",
               fix: str = "restore it from its original source", error: type[EdgekitError] = EdgekitError) -> bytes:
    """The whole file, refused unread when it is not a regular file or larger than `limit` bytes."""
    with open_regular(path, what, fix, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{f'{what} ' if what else ''}{shown(path)} is {size:,} bytes, more than the {limit:,} "
                        f"{f'a {what}' if what else 'such a file'} can be; {fix}.")
        data = f.read(limit + 1)  # the file may have grown since the stat
    if len(data) > limit:
        raise error(f"{shown(path)} grew past {limit:,} bytes while being read; {fix}.")
    return data


def read_text(path: str | Path, limit: int = MAX_JSON_BYTES, what: str = "",
              fix: str = "restore it from its original source", error: type[EdgekitError] = EdgekitError,
              encoding: str = "utf-8") -> str:
    data = read_bytes(path, limit, what, fix, error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise error(f"{f'{what} ' if what else ''}{shown(path)}: not {encoding.upper()} text (byte {e.start}: "
                    f"{data[e.start:e.start + 1]!r}); re-save it as {encoding.upper()} text, or {fix}.") from None


def depth(value) -> int:
    """How deeply lists and dicts nest in `value`, counted without recursion (a hostile file cannot make this
    overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_depth(value, where: str, fix: str, error: type[EdgekitError] = EdgekitError, limit: int = MAX_DEPTH):
    """`value` when it nests at most `limit` deep, else `error` naming `where`."""
    if depth(value) > limit:
        raise error(f"{where} nests lists or mappings more than {limit} deep; no edgekit file does: {fix}.")
    return value


def parse_json(text: str | bytes, where: str, fix: str, error: type[EdgekitError] = EdgekitError,
               kind: type | None = None):
    """JSON text as a value (of `kind`, when given), or `error` naming `where`: malformed, nested past the depth
    limit (Python's parser would raise RecursionError), or of another JSON type."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{where} nests lists or objects more than {MAX_DEPTH} deep; no edgekit file does: {fix}.") \
            from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{where} is not valid JSON ({type(e).__name__}: {shown(str(e)[:120])}): {fix}.") from None
    check_depth(value, where, fix, error)
    if kind is not None and not isinstance(value, kind):
        raise error(f"{where} holds a JSON {_json_type(value)}, not a JSON {_json_type(kind())}: {fix}.")
    return value


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def read_json(path: str | Path, kind: type | None = dict, what: str = "",
              fix: str = "restore it from its original source", error: type[EdgekitError] = InvalidModelFile,
              limit: int = MAX_JSON_BYTES):
    """A JSON file as `kind`, or `error` naming the file and the fix: not a regular file, too large, not UTF-8,
    malformed, nested too deep, or of another JSON type."""
    text = read_text(path, limit, what, fix, error)
    return parse_json(text, f"{f'{what} ' if what else ''}{shown(path)}", fix, error, kind)


def machine_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say), capped by a cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and (total is None or int(value) < total):
            total = int(value)
    return total


def gigabytes(size: float) -> str:
    return f"{size / 2**30:,.1f} GB" if size >= 2**30 else f"{size / 2**20:,.1f} MB"


def check_allocation(size: float, what: str, fix: str, error: type[EdgekitError] = EdgekitError) -> None:
    """Refuse, before allocating, what would take more memory than the machine has: `what` names the file and
    what in it asks for `size` bytes."""
    memory = machine_memory()
    if memory is not None and size > memory:
        raise error(f"{what} would need {gigabytes(size)} of memory, more than this machine's {gigabytes(memory)}; "
                    f"{fix}.")
